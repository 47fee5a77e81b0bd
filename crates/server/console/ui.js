// Building the page: elements, the alert and status lines, labelled form fields, and paged tables.

let nextId = 0;

/**
 * An element: `h('button', { type: 'button', onclick: f, 'data-testid': 'x' }, 'Text', child)`.
 * `on*` members become listeners, `class` the class list, everything else an attribute; children are nodes,
 * strings (as text, never HTML), arrays of them, or null (skipped).
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      element.className = value;
    } else if (name === 'value') {
      element.value = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** A fresh id for a label's `for`. */
export function uid(prefix) {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** Shows an error's message (the envelope's `status.message`, with its description when it has one). */
export function showError(error) {
  const alert = document.getElementById('alert');
  const message = error && error.message ? error.message : String(error);
  const description = error && error.description ? error.description : '';
  alert.replaceChildren(h('span', { class: 'alert-message' }, message));
  if (description) alert.append(h('span', { class: 'alert-detail' }, ` (${description})`));
  alert.hidden = false;
  clearStatus();
}

export function clearAlert() {
  const alert = document.getElementById('alert');
  alert.replaceChildren();
  alert.hidden = true;
}

/** A line saying what just succeeded. */
export function notify(text) {
  clearAlert();
  const status = document.getElementById('status');
  status.textContent = text;
  status.hidden = false;
}

export function clearStatus() {
  const status = document.getElementById('status');
  status.textContent = '';
  status.hidden = true;
}

/** Unix seconds as `YYYY-MM-DD HH:MM UTC`; empty for none. */
export function time(seconds) {
  if (seconds === null || seconds === undefined) return '';
  return `${new Date(Number(seconds) * 1000).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** A labelled input: `field('Username', { name: 'username', required: true })`. */
export function field(label, props = {}, hint = '') {
  const id = uid(props.name ?? 'field');
  const input = h('input', { type: 'text', id, ...props });
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    input,
    hint ? h('span', { class: 'hint' }, hint) : null,
  );
}

/** A labelled select of `options` ([value, text] pairs). */
export function select(label, props, options) {
  const id = uid(props.name ?? 'select');
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    h('select', { id, ...props }, options.map(([value, text]) => h('option', { value }, text))),
  );
}

/**
 * A form that runs `submit(values)` on submit, with its button disabled meanwhile; errors go to the alert.
 * `values` maps each named control to its trimmed value (passwords untrimmed).
 */
export function form(props, fields, buttonText, submit) {
  const button = h('button', { type: 'submit' }, buttonText);
  const element = h('form', { class: 'form', novalidate: true, ...props }, fields, h('div', { class: 'actions' }, button));
  element.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = {};
    for (const control of element.elements) {
      if (!control.name) continue;
      values[control.name] = control.type === 'password' ? control.value : control.value.trim();
    }
    button.disabled = true;
    try {
      await submit(values, element);
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
  return element;
}

/** A button that runs `action()` with itself disabled meanwhile; errors go to the alert. */
export function action(text, label, run, props = {}) {
  const button = h('button', { type: 'button', 'aria-label': label, ...props }, text);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await run();
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

const SKELETON_ROWS = 5;

/** Column widths in rem by class; others get DEFAULT_WIDTH. The table is never narrower than their sum. */
const WIDTHS = { time: 13, id: 15, 'actions-cell': 14 };
const DEFAULT_WIDTH = 8;

/**
 * A table of a list's pages. `load(cursor)` resolves to `{items, next_cursor}`; `columns` are
 * `{ title, cell(item) }`. The table keeps its height while a page loads (skeleton rows, fixed layout), and
 * scrolls sideways inside its frame on narrow screens. Returns `{ element, reload }`: `reload()` loads the
 * first page again.
 */
export function pagedTable({ testid, caption, columns, load, empty }) {
  const tbody = h('tbody');
  const table = h(
    'table',
    { 'data-testid': testid },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.title)))),
    tbody,
  );
  // Fixed layout keeps the columns still while pages load; on a narrow screen the frame scrolls instead of
  // squeezing them (CSSOM, which the policy allows, unlike a style attribute).
  const minimum = columns.reduce((sum, c) => sum + (WIDTHS[c.class] ?? DEFAULT_WIDTH), 0);
  table.style.setProperty('min-width', `${minimum}rem`);
  const cursors = [null];
  const previous = h('button', { type: 'button', disabled: true }, 'Previous');
  const next = h('button', { type: 'button', disabled: true }, 'Next');
  const where = h('span', { class: 'page-number' }, 'Page 1');
  let nextCursor = null;

  function skeleton() {
    table.setAttribute('aria-busy', 'true');
    const row = () =>
      h('tr', { class: 'skeleton' }, columns.map(() => h('td', {}, h('span', { class: 'bone' }, '\u00a0'))));
    tbody.replaceChildren(...Array.from({ length: SKELETON_ROWS }, row));
  }

  async function show() {
    skeleton();
    previous.disabled = true;
    next.disabled = true;
    try {
      const page = await load(cursors[cursors.length - 1]);
      nextCursor = page.next_cursor ?? null;
      tbody.replaceChildren(
        ...(page.items.length === 0
          ? [h('tr', { class: 'empty' }, h('td', { colspan: columns.length }, empty))]
          : page.items.map((item) => h('tr', {}, columns.map((c) => h('td', { class: c.class }, c.cell(item)))))),
      );
    } catch (error) {
      nextCursor = null;
      tbody.replaceChildren(h('tr', { class: 'empty' }, h('td', { colspan: columns.length }, 'Not loaded.')));
      showError(error);
    } finally {
      table.removeAttribute('aria-busy');
      previous.disabled = cursors.length === 1;
      next.disabled = nextCursor === null;
      where.textContent = `Page ${cursors.length}`;
    }
  }

  previous.addEventListener('click', () => {
    if (cursors.length > 1) cursors.pop();
    show();
  });
  next.addEventListener('click', () => {
    if (nextCursor !== null) cursors.push(nextCursor);
    show();
  });

  const element = h(
    'div',
    { class: 'list' },
    // The pager above the table: a page longer than the last pushes nothing down.
    h('nav', { class: 'pager', 'aria-label': `${caption} pages` }, previous, where, next),
    h('div', { class: 'table-frame', tabindex: '0', role: 'region', 'aria-label': caption }, table),
  );
  function reload() {
    cursors.length = 1;
    return show();
  }
  reload();
  return { element, reload, refresh: show };
}

/** A screen's heading and body, replacing what the screen showed. */
export function screen(title, ...parts) {
  const main = document.getElementById('screen');
  // replaceChildren would write a null as the text "null".
  main.replaceChildren(h('h1', { tabindex: '-1' }, title), ...parts.filter((part) => part));
  return main;
}
