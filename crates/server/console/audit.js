// The audit log of the chosen organisation: every change, oldest first.

import { get, seg } from './api.js';
import { pagedTable, screen, time } from './ui.js';

export function render(ctx) {
  const table = pagedTable({
    testid: 'audit-table',
    caption: `Audit log of ${ctx.org}`,
    empty: 'Nothing has been changed yet.',
    load: (cursor) => get(`/organisations/${seg(ctx.org)}/audit`, { cursor }),
    columns: [
      { title: 'When', class: 'time', cell: (e) => time(e.at) },
      { title: 'Actor', cell: (e) => e.actor },
      { title: 'Action', cell: (e) => e.action },
      { title: 'Target', cell: (e) => e.target },
      { title: 'Client', cell: (e) => e.client ?? '' },
    ],
  });
  screen(`Audit log of ${ctx.org}`, table.element);
}
