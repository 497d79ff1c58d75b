/**
 * Text for the status bar item and its popup, from a kernel status snapshot.
 * Byte units follow peft_magic.memory.fmt_bytes (binary, written "MB" / "GB").
 */

import { IMemory, IStatus } from './link';

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) {
    return '–';
  }
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  for (const unit of units) {
    if (Math.abs(v) < 1024 || unit === 'TB') {
      return unit === 'B' || unit === 'KB' ? `${Math.round(v)} ${unit}` : `${v.toFixed(1)} ${unit}`;
    }
    v /= 1024;
  }
  return `${v.toFixed(1)} TB`;
}

export function fmtLoss(x: number | null | undefined): string {
  if (x === null || x === undefined || !isFinite(x)) {
    return '–';
  }
  return Math.abs(x) >= 100 ? x.toFixed(1) : x.toFixed(4);
}

export function fmtDuration(s: number | null | undefined): string {
  if (s === null || s === undefined || !isFinite(s) || s < 0) {
    return '–';
  }
  const total = Math.round(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  const mm = h ? String(m).padStart(2, '0') : String(m);
  return (h ? `${h}:` : '') + `${mm}:${String(sec).padStart(2, '0')}`;
}

export function fmtInt(n: number | null | undefined): string {
  return n === null || n === undefined ? '–' : n.toLocaleString('en-US');
}

/** "RAM", "CUDA:0", "MPS": what the memory numbers are, short. */
export function memKind(mem: IMemory): string {
  if (mem.kind === 'CUDA') {
    return mem.device.replace('cuda', 'CUDA');
  }
  return mem.kind;
}

/** "RAM 512.0 MB / 23.4 GB (peak 700.1 MB)": now / device total, with the peak. */
export function memoryText(mem: IMemory, peak: number | null): string {
  let s = `${memKind(mem)} ${fmtBytes(mem.used)}`;
  if (mem.total) {
    s += ` / ${fmtBytes(mem.total)}`;
  }
  const p = peak ?? mem.peak;
  if (p !== null && p !== undefined) {
    s += ` (peak ${fmtBytes(p)})`;
  }
  return s;
}

function stepText(s: IStatus): string {
  const run = s.run;
  if (!run || run.step === null || run.step === undefined) {
    return '';
  }
  return run.total_steps ? `${run.step}/${run.total_steps}` : `${run.step}`;
}

/** How long ago a checkpoint was written (``saved_at``: seconds since the epoch), as
 * ``fmt_ago`` says it in the kernel: "just now", "40 s ago", "2 min ago", "3 h ago". */
export function savedAgo(savedAt: number, now: number = Date.now() / 1000): string {
  const s = Math.max(0, now - savedAt);
  if (s < 10) {
    return 'just now';
  }
  if (s < 90) {
    return `${Math.round(s)} s ago`;
  }
  if (s < 90 * 60) {
    return `${Math.round(s / 60)} min ago`;
  }
  return `${Math.round(s / 3600)} h ago`;
}

/** The one line in the status bar. */
export function statusText(s: IStatus): string {
  const parts: string[] = ['PEFT'];
  parts.push(s.adapter ? (s.method ? `${s.adapter} (${s.method})` : s.adapter) : 'no adapter');
  const run = s.run;
  const steps = stepText(s);
  const loss = run && run.loss !== null && run.loss !== undefined ? `loss ${fmtLoss(run.loss)}` : '';
  switch (s.phase) {
    case 'training':
      parts.push(steps ? `step ${steps}` : 'starting');
      if (loss) {
        parts.push(loss);
      }
      if (run && run.eta_s !== null && run.eta_s !== undefined) {
        parts.push(`ETA ${fmtDuration(run.eta_s)}`);
      }
      if (run && run.saved_at) {
        parts.push(`saved ${savedAgo(run.saved_at)}`);
      }
      break;
    case 'completed':
      parts.push(`step ${steps}`);
      if (loss) {
        parts.push(loss);
      }
      parts.push('done');
      break;
    case 'interrupted':
      parts.push(`interrupted at step ${steps}`);
      if (loss) {
        parts.push(loss);
      }
      break;
    case 'oom':
      parts.push(`out of memory at step ${steps}`);
      break;
    case 'error':
      parts.push(`error at step ${steps}`);
      break;
  }
  if (s.memory) {
    parts.push(memoryText(s.memory, s.peak));
  }
  return parts.join(' · ');
}

export const PHASE_WORDS: { [k: string]: string } = {
  idle: 'idle',
  training: 'training',
  completed: 'training finished',
  interrupted: 'interrupted',
  oom: 'out of memory',
  error: 'failed'
};
