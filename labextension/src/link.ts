/**
 * One kernel's peft_magic status, read over a Jupyter comm.
 *
 * The kernel never opens the comm (a kernel-initiated `comm_open` makes nbclient warn
 * and other frontends close it with an error): `%load_ext peft_magic` creates one comm
 * with `primary=False`, registered in the kernel's comm manager. This side finds it with
 * a `comm_info_request` — on connect, and while / after a cell that mentions "peft" runs —
 * attaches to its id and asks for the status. From then on the kernel pushes an update
 * on each engine event (throttled there), and this side asks again whenever a cell
 * finishes, which keeps the idle memory reading fresh.
 *
 * With ipykernel 7 and JupyterLab 4.6 comm messages travel on a subshell and the
 * comm-info request on the control channel, so both are answered while a training cell
 * keeps the main shell busy.
 */

import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

export const TARGET = 'peft_magic';

/** Memory reading, as `peft_magic.memory.MemoryReading.as_dict()` sends it. */
export interface IMemory {
  kind: 'CUDA' | 'MPS' | 'RAM' | string;
  device: string;
  label: string;
  used: number;
  peak: number | null;
  total: number | null;
  free: number | null;
  reserved: number | null;
  process: number | null;
}

export interface IRun {
  run_id: number | null;
  step: number | null;
  total_steps: number | null;
  epoch: number | null;
  loss: number | null;
  loss_smooth: number | null;
  lr: number | null;
  tokens_per_s: number | null;
  elapsed_s: number | null;
  eta_s: number | null;
  eval_loss: number | null;
  message: string | null;
  peak_memory: number | null;
}

export type Phase = 'idle' | 'training' | 'completed' | 'interrupted' | 'oom' | 'error';

/** The kernel's status snapshot (`peft_magic/comm.py`). */
export interface IStatus {
  phase: Phase;
  model_id: string | null;
  adapter: string | null;
  method: string | null;
  trainable: number | null;
  total: number | null;
  run: IRun | null;
  memory: IMemory | null;
  peak: number | null;
  losses: [number, number][];
  time: number;
}

const DISCOVERY_DELAYS_MS = [300, 1000, 2000, 4000, 8000];
const MIN_REQUEST_INTERVAL_MS = 1000;

export class KernelLink {
  constructor(readonly kernel: Kernel.IKernelConnection) {
    kernel.iopubMessage.connect(this._onIopub, this);
    kernel.statusChanged.connect(this._onKernelStatus, this);
    kernel.connectionStatusChanged.connect(this._onConnection, this);
    kernel.disposed.connect(() => this.dispose());
    void this.discover();
  }

  /** Emitted whenever the status (or whether there is one) changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The latest status, or null while this kernel has no peft_magic comm. */
  get status(): IStatus | null {
    return this._status;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._clearTimers();
    if (!this.kernel.isDisposed) {
      this.kernel.iopubMessage.disconnect(this._onIopub, this);
      this.kernel.statusChanged.disconnect(this._onKernelStatus, this);
      this.kernel.connectionStatusChanged.disconnect(this._onConnection, this);
    }
    this._comm?.dispose();
    this._comm = null;
    this._status = null;
    this._changed.emit();
    Signal.clearData(this);
  }

  /** Look for the kernel's peft_magic comm and attach to it. */
  async discover(): Promise<boolean> {
    if (this._disposed || this._comm || this._discovering) {
      return !!this._comm;
    }
    this._discovering = true;
    try {
      await this.kernel.info;
      const comms = await this._commInfo();
      const id = Object.keys(comms).find(k => comms[k].target_name === TARGET);
      if (id && !this._comm && !this._disposed) {
        await this._attach(id);
      }
    } catch (e) {
      // A kernel that cannot answer simply has no status.
    } finally {
      this._discovering = false;
    }
    if (this._comm) {
      this._clearTimers();
    }
    return !!this._comm;
  }

  /** Ask the kernel for its status (a fresh memory reading); at most once a second. */
  request(): void {
    if (!this._comm || this._disposed) {
      return;
    }
    const now = Date.now();
    const wait = this._lastRequest + MIN_REQUEST_INTERVAL_MS - now;
    if (wait > 0) {
      if (this._requestTimer === null) {
        this._requestTimer = window.setTimeout(() => {
          this._requestTimer = null;
          this.request();
        }, wait);
      }
      return;
    }
    this._lastRequest = now;
    try {
      this._comm.send({ request: 'status' });
    } catch (e) {
      // the kernel went away; the status signals will tidy up
    }
  }

  private async _commInfo(): Promise<{ [id: string]: { target_name: string } }> {
    const kernel = this.kernel as any;
    if (kernel.supportsSubshells && typeof kernel.sendControlMessage === 'function') {
      // ipykernel 7 answers shell requests on the control channel too: no waiting for a
      // busy main shell.
      const msg = KernelMessage.createMessage({
        msgType: 'comm_info_request',
        channel: 'control' as any,
        session: this.kernel.clientId,
        username: this.kernel.username,
        content: { target_name: TARGET }
      } as any);
      const reply: any = await kernel.sendControlMessage(msg, true, true).done;
      return reply?.content?.comms ?? {};
    }
    const reply = await this.kernel.requestCommInfo({ target_name: TARGET });
    return reply.content.status === 'ok' ? reply.content.comms : {};
  }

  private async _attach(commId: string): Promise<void> {
    if (this.kernel.hasComm(commId)) {
      return;
    }
    const comm = this.kernel.createComm(TARGET, commId);
    comm.onMsg = msg => this._onMsg(msg);
    comm.onClose = () => this._detach();
    this._comm = comm;
    // Messages go on the comm's subshell once it exists; wait for it (briefly) so the
    // first request is not queued behind a running cell.
    const started = (comm as any).subshellStarted as Promise<void> | undefined;
    if ((this.kernel as any).supportsSubshells && started) {
      await Promise.race([started, new Promise(r => setTimeout(r, 3000))]).catch(() => undefined);
    }
    this._lastRequest = 0;
    this.request();
  }

  private _detach(): void {
    this._comm = null;
    if (this._status !== null) {
      this._status = null;
      this._changed.emit();
    }
  }

  private _onMsg(msg: KernelMessage.ICommMsgMsg): void {
    const data = msg.content.data as any;
    if (data && data.type === 'status' && data.status) {
      this._status = data.status as IStatus;
      this._changed.emit();
    }
  }

  private _onIopub(_: Kernel.IKernelConnection, msg: KernelMessage.IIOPubMessage): void {
    const type = msg.header.msg_type;
    if (type === 'execute_input') {
      const code = String((msg.content as any).code ?? '');
      if (!this._comm && /peft/i.test(code)) {
        this._wantDiscover = true;
        this._scheduleDiscovery();
      }
    } else if (type === 'status') {
      const state = (msg.content as any).execution_state;
      const parentType = (msg.parent_header as any)?.msg_type;
      // Only after a cell: comm requests make the kernel busy/idle too (no feedback loop).
      if (state === 'idle' && parentType === 'execute_request') {
        if (this._comm) {
          this.request();
        } else if (this._wantDiscover) {
          this._wantDiscover = false;
          void this.discover();
        }
      }
    }
  }

  private _scheduleDiscovery(): void {
    this._clearTimers();
    for (const delay of DISCOVERY_DELAYS_MS) {
      this._timers.push(
        window.setTimeout(() => {
          if (!this._comm) {
            void this.discover();
          }
        }, delay)
      );
    }
  }

  private _clearTimers(): void {
    this._timers.forEach(t => window.clearTimeout(t));
    this._timers = [];
    if (this._requestTimer !== null) {
      window.clearTimeout(this._requestTimer);
      this._requestTimer = null;
    }
  }

  private _onKernelStatus(_: Kernel.IKernelConnection, status: KernelMessage.Status): void {
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      // Comms do not survive a restart; the next %load_ext creates a new one.
      this._clearTimers();
      this._comm = null;
      this._wantDiscover = false;
      if (this._status !== null) {
        this._status = null;
        this._changed.emit();
      }
    }
  }

  private _onConnection(_: Kernel.IKernelConnection, status: Kernel.ConnectionStatus): void {
    if (status === 'connected' && !this._comm) {
      void this.discover();
    }
  }

  private _changed = new Signal<this, void>(this);
  private _status: IStatus | null = null;
  private _comm: Kernel.IComm | null = null;
  private _discovering = false;
  private _wantDiscover = false;
  private _disposed = false;
  private _timers: number[] = [];
  private _requestTimer: number | null = null;
  private _lastRequest = 0;
}
