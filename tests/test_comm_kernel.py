"""The status-bar comm, kernel side, in real kernels.

* Headless (nbclient), the status-bar notebook runs without a single comm message, error
  or warning — in the outputs, in nbclient's log and in the kernel's own stderr.
* Driven the way the JupyterLab extension drives it (jupyter_client: comm_info_request,
  then comm messages on the comm the kernel registered), the kernel pushes adapter,
  training progress (throttled), the final step / total / loss, idle memory on request,
  and says so when training is interrupted.
"""

from __future__ import annotations

import logging
import queue
import re
import time
from pathlib import Path

import pytest
from nbclient import NotebookClient
from statusbar_notebook import CELLS, STEPS, notebook

pytestmark = pytest.mark.kernel

TARGET = "peft_magic"
#: What a misbehaving status comm writes, and nothing else: the comm managers' own messages
#: (ipykernel's and the ``comm`` package's, for a target or comm they do not know or a handler
#: that raised), nbclient's for a kernel-opened comm, peft_magic's comm logger, and a traceback
#: through peft_magic/comm.py. Matched as these messages, never as a word that other text (a
#: library's line at import, a package name) can contain.
COMM_MESSAGES = re.compile(
    r"No such comm target registered|No such comm:|No handler found for comm target|"
    r"Exception (?:opening comm|in comm_msg|handling comm|in comm_close)|"
    r"peft_magic (?:status push failed|status request failed|could not renew its comm|status comm unavailable|"
    r"cannot watch comm_info requests|status comm close failed)|peft_magic[/\\.]comm(?:\.py)?\b")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_headless_run_sends_nothing_and_warns_nothing(tmp_path: Path):
    nb = notebook()
    probe = ("from peft_magic import comm as _c\n"
             "_ch = _c.channel()\n"
             "print('@@', _ch.sent, _ch.listening, _ch.status['adapter'], _ch.status['phase'], "
             "_ch.status['run']['step'], _ch.status['run']['total_steps'])")
    nb.cells.append(__import__("nbformat").v4.new_code_cell(probe))
    log = logging.getLogger("test_comm_kernel.nbclient")
    records = _Records()
    log.addHandler(records)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    kernel_log = tmp_path / "kernel-stderr.txt"
    comm_messages: list[str] = []

    class Client(NotebookClient):
        def handle_comm_msg(self, outs, msg, cell_index):  # type: ignore[override]
            content = msg["content"]  # the progress widgets use comms too: keep only ours
            if content.get("target_name") == TARGET or (content.get("data") or {}).get("type") == "status":
                comm_messages.append(msg["msg_type"])
            super().handle_comm_msg(outs, msg, cell_index)

    client = Client(nb, timeout=600, kernel_name="python3", log=log,
                    resources={"metadata": {"path": str(tmp_path)}})
    with open(kernel_log, "w") as err:
        client.execute(stderr=err, stdout=err)

    for i, cell in enumerate(nb.cells):
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        assert not errors, (CELLS + [probe])[i]
        for o in cell.outputs:
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                assert not COMM_MESSAGES.search(o["text"]), o["text"]
    assert comm_messages == [], "the kernel sent comm messages with no frontend listening"
    warnings = [r.getMessage() for r in records.records if r.levelno >= logging.WARNING]
    assert warnings == [], warnings
    kernel_err = kernel_log.read_text()
    assert not COMM_MESSAGES.search(kernel_err), kernel_err
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    line = [ln for ln in out.splitlines() if ln.startswith("@@")][0].split()
    # the snapshot was kept (for a frontend that attaches later), nothing was sent
    assert line[1:] == ["0", "False", "default", "completed", str(STEPS), str(STEPS)], out


# ----------------------------------------------------------------------------- frontend protocol


class Frontend:
    """What the JupyterLab extension does, with jupyter_client: find the comm, ask, listen."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd))
        self.comm_id: str | None = None
        self.pushes: list[dict] = []

    def _reply(self, msg_id: str, timeout: float) -> dict:
        while True:  # skip replies to earlier requests (kernel_info at start-up)
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def comms(self) -> list[str]:
        reply = self._reply(self.kc.comm_info(target_name=TARGET), 30)
        assert reply["msg_type"] == "comm_info_reply", reply
        return [k for k, v in reply["content"]["comms"].items() if v["target_name"] == TARGET]

    def ask(self) -> dict:
        """Send {"request": "status"}; return the status the kernel answers with."""
        assert self.comm_id
        msg = self.kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": {"request": "status"}})
        self.kc.shell_channel.send(msg)
        return self._drain(msg["header"]["msg_id"])[-1]

    def run(self, code: str, until=None, timeout: float = 300) -> list[dict]:
        """Execute ``code``; return the statuses pushed while it ran (``until(status)`` is
        called on each, e.g. to interrupt)."""
        msg_id = self.kc.execute(code)
        pushed = self._drain(msg_id, until=until, timeout=timeout)
        self.last_reply = self._reply(msg_id, timeout)["content"]
        return pushed

    def _drain(self, parent_id: str, until=None, timeout: float = 300) -> list[dict]:
        """Read iopub until the kernel is idle after ``parent_id``; collect our comm's pushes."""
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind in ("comm_open", "comm_close") and content.get("target_name", TARGET) == TARGET:
                out.append({"_event": kind, "comm_id": content.get("comm_id")})
            if kind == "comm_msg" and content.get("comm_id") == self.comm_id:
                data = content["data"]
                assert data["type"] == "status" and data["v"] == 1
                st = data["status"]
                st["_t"] = time.monotonic()
                out.append(st)
                self.pushes.append(st)
                if until is not None:
                    until(st)
            if (kind == "status" and content["execution_state"] == "idle"
                    and msg["parent_header"].get("msg_id") == parent_id):
                return out
        raise TimeoutError(f"kernel not idle after {timeout}s")

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    f = Frontend(tmp_path_factory.mktemp("comm"))
    yield f
    f.close()


def _ready(frontend: Frontend, *cells: str) -> None:
    """The extension loaded and its comm found, then ``cells`` run: each test builds the state
    it needs in the shared kernel, whatever ran there before (tests run in any order)."""
    ids = frontend.comms()
    if not ids:  # a fresh kernel, or one where the extension was unloaded
        frontend.run(CELLS[0])
        assert frontend.last_reply["status"] == "ok"
        ids = frontend.comms()
    assert len(ids) == 1, ids
    frontend.comm_id = ids[0]
    for cell in cells:
        frontend.run(cell)
        assert frontend.last_reply["status"] == "ok", cell


def test_no_comm_until_the_extension_loads_and_nothing_sent_unasked(tmp_path: Path):
    frontend = Frontend(tmp_path)  # its own kernel: nothing may have loaded the extension yet
    try:
        assert frontend.comms() == []
        events = frontend.run(CELLS[0])  # %load_ext peft_magic
        assert frontend.last_reply["status"] == "ok"
        assert events == [], "the kernel must not open a comm by itself"
        assert len(frontend.comms()) == 1
    finally:
        frontend.close()


def test_idle_status_has_memory_of_this_kernel(tmp_path: Path):
    frontend = Frontend(tmp_path)  # its own kernel: idle, no adapter, whatever the other tests did
    try:
        _ready(frontend)
        st = frontend.ask()
        assert st["phase"] == "idle" and st["adapter"] is None
        mem = st["memory"]
        assert mem["kind"] == "RAM" and mem["label"] == "process RAM"
        assert 10 * 2**20 < mem["used"] < mem["total"]
        assert st["peak"] >= mem["used"]
    finally:
        frontend.close()


def test_adapter_and_memory_pushed_on_attach(frontend: Frontend):
    _ready(frontend, CELLS[1])  # %peft load tiny-llama: a model without adapters
    pushed = frontend.run(CELLS[2])  # %peft lora r=8
    assert frontend.last_reply["status"] == "ok"
    assert pushed, "attaching must push the new adapter"
    st = pushed[-1]
    assert (st["adapter"], st["method"], st["phase"]) == ("default", "lora", "idle")
    assert 0 < st["trainable"] < st["total"]
    assert st["memory"]["used"] > 0


def test_training_progress_final_step_and_loss(frontend: Frontend):
    _ready(frontend, *CELLS[1:4])  # a fresh tiny Llama with LoRA, and the texts
    t0 = time.monotonic()
    pushed = frontend.run(CELLS[4])  # %peft train data=texts steps=STEPS
    seconds = time.monotonic() - t0
    assert frontend.last_reply["status"] == "ok"
    phases = [p["phase"] for p in pushed]
    assert phases[0] == "training" and phases[-1] == "completed", phases
    final = pushed[-1]
    assert final["run"]["step"] == STEPS and final["run"]["total_steps"] == STEPS
    assert isinstance(final["run"]["loss"], float) and final["run"]["loss"] > 0
    # the recent losses are the run's logged ones, not only the (throttled) pushes
    logged = [step for step, _ in final["losses"]]
    assert logged == sorted(set(logged)) and logged[-1] == STEPS and len(logged) >= STEPS // 2, logged
    assert final["peak"] >= final["memory"]["used"] > 0
    progress = [p for p in pushed if p["phase"] == "training" and p["run"]["step"]]
    assert progress, "no progress pushed while training"
    # throttled: the engine offers every step, the comm sends a few a second at most
    assert len(progress) <= 4 * seconds + 2, (len(progress), seconds)
    # the idle answer after training still says what happened, with fresh memory
    st = frontend.ask()
    assert (st["phase"], st["run"]["step"], st["adapter"]) == ("completed", STEPS, "default")


def test_interrupt_is_reported(frontend: Frontend):
    _ready(frontend, *CELLS[1:4])
    sent = {"done": False}

    def interrupt_once_running(st: dict) -> None:
        if not sent["done"] and st["phase"] == "training" and (st["run"]["step"] or 0) >= 2:
            sent["done"] = True
            frontend.km.interrupt_kernel()

    pushed = frontend.run("%peft train data=texts steps=100000 batch=4", until=interrupt_once_running)
    assert sent["done"], [p["phase"] for p in pushed]
    final = pushed[-1]
    assert final["phase"] == "interrupted", final
    assert 2 <= final["run"]["step"] < 100000
    assert final["run"]["total_steps"] == 100000


def test_unload_closes_it_and_a_busy_cell_is_watched_live(frontend: Frontend):
    _ready(frontend, *CELLS[1:4])
    old = frontend.comm_id
    events = frontend.run("%unload_ext peft_magic")
    assert {"_event": "comm_close", "comm_id": old} in events
    assert frontend.comms() == []
    # load and train in one cell; find the comm on the control channel while it runs,
    # as the extension does with ipykernel 7: pushes must start during the cell
    kc = frontend.kc
    msg_id = kc.execute("%load_ext peft_magic\n%peft train data=texts steps=40 batch=4")
    found, deadline = None, time.monotonic() + 60
    while found is None and time.monotonic() < deadline:
        req = kc.session.msg("comm_info_request", {"target_name": TARGET})
        kc.control_channel.send(req)
        reply = kc.control_channel.get_msg(timeout=10)
        while reply["parent_header"].get("msg_id") != req["header"]["msg_id"]:
            reply = kc.control_channel.get_msg(timeout=10)
        ids = [k for k, v in reply["content"]["comms"].items() if v["target_name"] == TARGET]
        found = ids[0] if ids else None
        time.sleep(0.2)
    assert found and found != old
    frontend.comm_id = found
    pushed = frontend._drain(msg_id)
    assert [p for p in pushed if p["phase"] == "training"], [p["phase"] for p in pushed]
    final = pushed[-1]
    assert (final["phase"], final["adapter"], final["run"]["step"]) == ("completed", "default", 40)
