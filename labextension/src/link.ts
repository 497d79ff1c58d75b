/**
 * One kernel's peft_magic status, read from a Jupyter comm.
 *
 * The kernel never opens the comm (a kernel-initiated `comm_open` makes nbclient warn
 * and other frontends close it with an error): `%load_ext peft_magic` creates one comm
 * with `primary=False`, registered in the kernel's comm manager, and stays silent. This
 * side finds it with a `comm_info_request` for the target `peft_magic` — on connect,
 * and while / after a cell that mentions "peft" runs; on the control channel where the
 * kernel supports subshells (ipykernel 7), so a busy cell does not delay it. That
 * request is also what tells the kernel someone listens: from then on it pushes its
 * status (`comm_msg` on iopub, throttled) on each engine event.
 *
 * The pushes are read straight from the kernel's iopub stream, and the occasional
 * `{"request": "status"}` (after a cell finishes: fresh idle memory) is sent on the main
 * shell. No comm object is made on this side, hence no comm subshell: a subshell's
 * busy / idle replies would make JupyterLab's kernel indicator say "Idle" while a
 * training cell is still running.
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
  /** the last checkpoint the run wrote (autosave): its step and when (seconds since the epoch) */
  saved_step?: number | null;
  saved_at?: number | null;
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
    this._commId = null;
    this._status = null;
    this._changed.emit();
    Signal.clearData(this);
  }

  /** Look for the kernel's peft_magic comm; true once known. */
  async discover(): Promise<boolean> {
    if (this._disposed || this._commId || this._discovering) {
      return !!this._commId;
    }
    this._discovering = true;
    try {
      await this.kernel.info;
      const comms = await this._commInfo();
      const id = Object.keys(comms).find(k => comms[k].target_name === TARGET);
      if (id && !this._disposed) {
        const first = !this._commId;
        this._commId = id;
        if (first) {
          // The kernel starts pushing on seeing the comm_info request; this request (on
          // the main shell, answered when the kernel is idle) covers kernels where it
          // cannot see it.
          this._lastRequest = 0;
          this.request();
        }
      }
    } catch (e) {
      // A kernel that cannot answer simply has no status.
    } finally {
      this._discovering = false;
    }
    if (this._commId) {
      this._clearTimers();
    }
    return !!this._commId;
  }

  /** Ask the kernel for its status (a fresh memory reading); at most once a second. */
  request(): void {
    if (!this._commId || this._disposed || this.kernel.isDisposed) {
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
      const msg = KernelMessage.createMessage<KernelMessage.ICommMsgMsg<'shell'>>({
        msgType: 'comm_msg',
        channel: 'shell',
        session: this.kernel.clientId,
        username: this.kernel.username,
        content: { comm_id: this._commId, data: { request: 'status' } }
      });
      this.kernel.sendShellMessage(msg, false, true);
    } catch (e) {
      // the kernel went away; the status signals will tidy up
    }
  }

  private async _commInfo(): Promise<{ [id: string]: { target_name: string } }> {
    const kernel = this.kernel as any;
    if (kernel.supportsSubshells && typeof kernel.sendControlMessage === 'function') {
      // ipykernel 7 answers shell requests on the control channel too: no waiting for a
      // busy main shell. (comm_info is not counted as activity: no busy/idle flicker.)
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

  private _detach(): void {
    this._commId = null;
    if (this._status !== null) {
      this._status = null;
      this._changed.emit();
    }
  }

  private _onIopub(_: Kernel.IKernelConnection, msg: KernelMessage.IIOPubMessage): void {
    const type = msg.header.msg_type;
    if (type === 'comm_msg') {
      const content = msg.content as any;
      const data = content.data;
      if (data && data.target === TARGET && data.type === 'status' && data.status) {
        // A push may overtake the comm_info reply (iopub vs control): adopt its comm id.
        if (!this._commId) {
          this._commId = content.comm_id;
          this._clearTimers();
        }
        if (content.comm_id === this._commId) {
          this._status = data.status as IStatus;
          this._changed.emit();
        }
      }
    } else if (type === 'comm_close') {
      if (this._commId && (msg.content as any).comm_id === this._commId) {
        this._detach(); // %unload_ext; a later %load_ext is found again
      }
    } else if (type === 'execute_input') {
      const code = String((msg.content as any).code ?? '');
      if (!this._commId && /peft/i.test(code)) {
        this._wantDiscover = true;
        this._scheduleDiscovery();
      }
    } else if (type === 'status') {
      const state = (msg.content as any).execution_state;
      const parentType = (msg.parent_header as any)?.msg_type;
      // Only after a cell: our own requests make the kernel busy/idle too (no loop).
      if (state === 'idle' && parentType === 'execute_request') {
        if (this._commId) {
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
          if (!this._commId) {
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
      this._commId = null;
      this._wantDiscover = false;
      if (this._status !== null) {
        this._status = null;
        this._changed.emit();
      }
    }
  }

  private _onConnection(_: Kernel.IKernelConnection, status: Kernel.ConnectionStatus): void {
    if (status === 'connected' && !this._commId) {
      void this.discover();
    }
  }

  private _changed = new Signal<this, void>(this);
  private _status: IStatus | null = null;
  private _commId: string | null = null;
  private _discovering = false;
  private _wantDiscover = false;
  private _disposed = false;
  private _timers: number[] = [];
  private _requestTimer: number | null = null;
  private _lastRequest = 0;
}
