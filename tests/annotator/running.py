"""Running the annotator's labelling loop in a test: until a condition holds, bounded."""

import asyncio


async def run_until(annotator, predicate, timeout: float = 5.0) -> None:
    """Run `annotator.run` until `predicate()` is true or `timeout` seconds pass, then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(annotator.run(stop))
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await task
