// Units of the chosen organisation, with a form to create one.

import { get, post, seg } from './api.js';
import { field, form, h, notify, pagedTable, screen } from './ui.js';

export function render(ctx) {
  const base = `/organisations/${seg(ctx.org)}/units`;
  const table = pagedTable({
    testid: 'units-table',
    caption: `Units of ${ctx.org}`,
    empty: 'No units yet.',
    load: (cursor) => get(base, { cursor }),
    columns: [
      { title: 'Name', cell: (u) => u.name },
      { title: 'Code', cell: (u) => u.code ?? '' },
      { title: 'Id', class: 'id', cell: (u) => u.id },
    ],
  });
  const create = form(
    { 'data-testid': 'create-unit-form', 'aria-label': 'Create a unit' },
    [
      field('Name', { name: 'name', required: true, autocomplete: 'off' }),
      field('Code', { name: 'code', autocomplete: 'off' }, 'Optional'),
    ],
    'Create unit',
    async (values, element) => {
      const body = { name: values.name };
      if (values.code) body.code = values.code;
      const created = await post(base, body);
      element.reset();
      notify(`Unit ${created.name} created.`);
      await table.reload();
    },
  );
  screen(`Units of ${ctx.org}`, h('h2', {}, 'Create a unit'), create, table.element);
}
