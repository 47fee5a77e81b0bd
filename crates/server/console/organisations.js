// Organisations: every one (operators), with a form to create one.

import { get, post } from './api.js';
import { field, form, h, notify, pagedTable, screen, time } from './ui.js';

export function render(ctx) {
  const table = pagedTable({
    testid: 'organisations-table',
    caption: 'Organisations',
    empty: 'No organisations yet.',
    load: (cursor) => get('/organisations', { cursor }),
    columns: [
      { title: 'Name', cell: (o) => h('a', { href: ctx.link('users', o.name) }, o.name) },
      { title: 'Id', class: 'id', cell: (o) => o.id },
      { title: 'Created', class: 'time', cell: (o) => time(o.created_at) },
    ],
  });
  const create = ctx.role === 'operator'
    ? form(
        { 'data-testid': 'create-organisation-form', 'aria-label': 'Create an organisation' },
        [field('Name', { name: 'name', required: true, autocomplete: 'off' })],
        'Create organisation',
        async (values, element) => {
          const created = await post('/organisations', { name: values.name });
          element.reset();
          notify(`Organisation ${created.name} created.`);
          await ctx.organisationsChanged(created.name);
          await table.reload();
        },
      )
    : null;
  screen('Organisations', create ? h('h2', {}, 'Create an organisation') : null, create, table.element);
}
