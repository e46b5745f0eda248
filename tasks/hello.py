"""`hello`: the reference's own example task; it greets `name`."""

from tasks.declare import STRING, Job, Kind, Output, Param


def run(job: Job) -> str:
    return f"Hello {job.params['name']}"


KIND = Kind(
    name="hello",
    help="Say hello: the result is the string `Hello <name>`.",
    params=(Param("name", STRING, "Who to greet.", required=True),),
    outputs=(Output("result", "string", "`Hello <name>`."),),
    run=run,
    time_limit=10.0,
)
