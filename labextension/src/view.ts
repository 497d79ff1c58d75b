/**
 * The status bar item and its details popup.
 */

import { Popup, showPopup } from '@jupyterlab/statusbar';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import {
  PHASE_WORDS,
  fmtBytes,
  fmtDuration,
  fmtInt,
  fmtLoss,
  memKind,
  savedAgo,
  statusText
} from './format';
import { IStatus, KernelLink } from './link';

/** Shows the status of the kernel behind the notebook in focus. */
export class StatusItem extends Widget {
  constructor() {
    super();
    this.addClass('jp-PeftMagic-item');
    this.node.title = 'peft_magic: click for details';
    this.node.addEventListener('click', () => this._togglePopup());
  }

  /** Fires when the item starts or stops having something to show. */
  get activeChanged(): ISignal<this, void> {
    return this._activeChanged;
  }

  get isActive(): boolean {
    return !!this._link?.status;
  }

  get link(): KernelLink | null {
    return this._link;
  }

  set link(link: KernelLink | null) {
    if (link === this._link) {
      return;
    }
    this._link?.changed.disconnect(this._refresh, this);
    this._link = link;
    link?.changed.connect(this._refresh, this);
    this._popup?.dispose();
    this._popup = null;
    this._refresh();
    link?.request();
  }

  private _refresh(): void {
    const status = this._link?.status ?? null;
    this.node.textContent = status ? statusText(status) : '';
    this.node.dataset.phase = status?.phase ?? '';
    if (this._wasActive !== !!status) {
      this._wasActive = !!status;
      this._activeChanged.emit();
    }
    if (this._popup && !this._popup.isDisposed && this._body) {
      if (status) {
        this._body.render(status);
      } else {
        this._popup.dispose();
      }
    }
  }

  private _togglePopup(): void {
    if (this._popup && !this._popup.isDisposed) {
      this._popup.dispose();
      this._popup = null;
      return;
    }
    const status = this._link?.status;
    if (!status) {
      return;
    }
    this._link?.request();
    this._body = new DetailsBody();
    this._body.render(status);
    this._popup = showPopup({ body: this._body, anchor: this, align: 'left', hasDynamicSize: true });
  }

  private _link: KernelLink | null = null;
  private _popup: Popup | null = null;
  private _body: DetailsBody | null = null;
  private _wasActive = false;
  private _activeChanged = new Signal<this, void>(this);
}

/** The popup: method, trainable params, peak memory, recent loss. */
export class DetailsBody extends Widget {
  constructor() {
    super();
    this.addClass('jp-PeftMagic-details');
  }

  render(s: IStatus): void {
    const rows: [string, string][] = [];
    rows.push(['Adapter', s.adapter ?? 'none']);
    rows.push(['Method', s.method ?? '–']);
    if (s.trainable !== null && s.trainable !== undefined) {
      const pct = s.total ? ` (${((100 * s.trainable) / s.total).toFixed(4)}%)` : '';
      rows.push(['Trainable params', `${fmtInt(s.trainable)} / ${fmtInt(s.total)}${pct}`]);
    }
    rows.push(['State', PHASE_WORDS[s.phase] ?? s.phase]);
    const run = s.run;
    if (run) {
      if (run.step !== null) {
        rows.push(['Step', run.total_steps ? `${run.step} / ${run.total_steps}` : `${run.step}`]);
      }
      rows.push(['Loss', fmtLoss(run.loss) + (run.loss_smooth != null ? ` (smoothed ${fmtLoss(run.loss_smooth)})` : '')]);
      if (run.eval_loss != null) {
        rows.push(['Eval loss', fmtLoss(run.eval_loss)]);
      }
      if (run.lr != null) {
        rows.push(['Learning rate', run.lr.toExponential(2)]);
      }
      if (run.tokens_per_s != null) {
        rows.push(['Tokens / s', fmtInt(Math.round(run.tokens_per_s))]);
      }
      rows.push(['Elapsed', fmtDuration(run.elapsed_s)]);
      if (s.phase === 'training') {
        rows.push(['ETA', fmtDuration(run.eta_s)]);
      }
      if (run.saved_at && run.saved_step != null) {
        rows.push(['Last checkpoint', `step ${run.saved_step} · ${savedAgo(run.saved_at)}`]);
      }
      if (run.message) {
        rows.push(['Message', run.message]);
      }
    }
    if (s.memory) {
      const m = s.memory;
      rows.push(['Memory', `${fmtBytes(m.used)} ${m.label}`]);
      rows.push(['Peak memory', fmtBytes(s.peak ?? m.peak)]);
      rows.push([`${memKind(m)} total`, fmtBytes(m.total)]);
      if (m.reserved != null) {
        rows.push(['Reserved', fmtBytes(m.reserved)]);
      }
    }

    const node = this.node;
    node.textContent = '';
    const title = document.createElement('div');
    title.className = 'jp-PeftMagic-title';
    title.textContent = 'peft_magic — this kernel';
    node.appendChild(title);
    const table = document.createElement('table');
    for (const [k, v] of rows) {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.textContent = k;
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(th, td);
      table.appendChild(tr);
    }
    node.appendChild(table);

    const losses = s.losses ?? [];
    if (losses.length) {
      const head = document.createElement('div');
      head.className = 'jp-PeftMagic-subtitle';
      head.textContent = 'Recent loss';
      node.appendChild(head);
      if (losses.length > 1) {
        node.appendChild(sparkline(losses));
      }
      const list = document.createElement('div');
      list.className = 'jp-PeftMagic-losses';
      list.textContent = losses
        .slice(-8)
        .map(([step, loss]) => `${step}: ${fmtLoss(loss)}`)
        .join(', ');
      node.appendChild(list);
    }
  }
}

function sparkline(points: [number, number][]): SVGSVGElement {
  const w = 260;
  const h = 48;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('width', String(w));
  svg.setAttribute('height', String(h));
  svg.setAttribute('class', 'jp-PeftMagic-spark');
  const xs = points.map(p => p[0]);
  const ys = points.map(p => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x: number) => (x1 > x0 ? ((x - x0) / (x1 - x0)) * (w - 4) + 2 : w / 2);
  const sy = (y: number) => (y1 > y0 ? h - 2 - ((y - y0) / (y1 - y0)) * (h - 4) : h / 2);
  const path = document.createElementNS(ns, 'polyline');
  path.setAttribute('points', points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' '));
  path.setAttribute('fill', 'none');
  path.setAttribute('stroke', 'var(--jp-brand-color1)');
  path.setAttribute('stroke-width', '1.5');
  svg.appendChild(path);
  return svg;
}
