"""taskstream's server: the aiohttp application and everything around task execution."""
