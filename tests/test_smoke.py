from tests.conftest import Api, assert_status


async def test_hello_blocking(api: Api) -> None:
    status = await api.run({"task_name": "hello", "name": "John"})
    assert_status(status, "success")
    assert status["result"] == "Hello John"
