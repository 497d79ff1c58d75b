/**
 * peft_magic status bar: the PEFT training status and memory of the kernel behind the
 * notebook in focus (adapter, step / total, loss, ETA, memory now / peak / total).
 *
 * One KernelLink per kernel connection, made when a notebook opens and whenever its
 * kernel changes; the status bar item follows the notebook in focus.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';

import { KernelLink } from './link';
import { StatusItem } from './view';

const PLUGIN_ID = 'peft-magic:status';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: "The kernel's PEFT training status and memory in the status bar.",
  autoStart: true,
  requires: [IStatusBar, INotebookTracker],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar, tracker: INotebookTracker) => {
    const links = new Map<Kernel.IKernelConnection, KernelLink>();
    const item = new StatusItem();

    const linkFor = (kernel: Kernel.IKernelConnection | null | undefined): KernelLink | null => {
      if (!kernel || kernel.isDisposed) {
        return null;
      }
      let link = links.get(kernel);
      if (!link || link.isDisposed) {
        link = new KernelLink(kernel);
        links.set(kernel, link);
        kernel.disposed.connect(() => links.delete(kernel));
      }
      return link;
    };

    const follow = () => {
      const panel = tracker.currentWidget;
      item.link = panel ? linkFor(panel.sessionContext.session?.kernel) : null;
    };

    const watch = (panel: NotebookPanel) => {
      const onKernel = () => {
        linkFor(panel.sessionContext.session?.kernel);
        if (panel === tracker.currentWidget) {
          follow();
        }
      };
      panel.sessionContext.kernelChanged.connect(onKernel);
      void panel.sessionContext.ready.then(onKernel);
      onKernel();
      panel.disposed.connect(() => {
        panel.sessionContext.kernelChanged.disconnect(onKernel);
        follow();
      });
    };

    tracker.forEach(watch);
    tracker.widgetAdded.connect((_, panel) => watch(panel));
    tracker.currentChanged.connect(follow);
    follow();

    statusBar.registerStatusItem(PLUGIN_ID, {
      item,
      align: 'left',
      rank: 5,
      isActive: () => item.isActive,
      activeStateChanged: item.activeChanged
    });
  }
};

export default plugin;
