from rushpy import Controller
from tests.funcs import square


async def test_local_workers_run_pushed_tasks(controller: Controller) -> None:
    await controller.start_local_workers(2, fun=square)
    await controller.wait_for_workers(2, timeout=30)
    keys = await controller.push_tasks([{"x": i} for i in range(50)])
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert sorted(table["y"]) == sorted(i * i for i in range(50))
    assert set(table["state"]) == {"finished"}
