// The console's entry: sign-in, the signed-in bar, the organisation chooser and the screens, routed by the
// URL's fragment (`#/users/Acme`), so that reloading a screen shows it again.

import * as api from './api.js';
import { ApiError, get, seg } from './api.js';
import * as audit from './audit.js';
import * as keys from './keys.js';
import * as organisations from './organisations.js';
import * as sessions from './sessions.js';
import { clearAlert, clearStatus, h, showError } from './ui.js';
import * as units from './units.js';
import * as users from './users.js';

/** Every screen, in the navigation's order; `operator` ones are shown to operators only. */
const SCREENS = [
  { name: 'organisations', title: 'Organisations', module: organisations, operator: true },
  { name: 'units', title: 'Units', module: units },
  { name: 'users', title: 'Users', module: users },
  { name: 'keys', title: 'Keys', module: keys },
  { name: 'sessions', title: 'Sessions', module: sessions },
  { name: 'audit', title: 'Audit log', module: audit },
];

const byId = (id) => document.getElementById(id);

/** Who is signed in, once the console knows the role; null while signed out. */
let ctx = null;

function link(screen, org) {
  return screen === 'organisations' ? '#/organisations' : `#/${screen}/${seg(org)}`;
}

/** Lays out what was held back while the page loaded (see the style sheet). */
function ready() {
  document.body.dataset.state = 'ready';
}

function showSignIn() {
  ready();
  ctx = null;
  byId('who').hidden = true;
  byId('nav').hidden = true;
  byId('screen').replaceChildren();
  byId('sign-in').hidden = false;
  document.title = 'Sign in · crm-auth console';
}

/** The organisations the chooser offers: an operator's first 500, an admin's own. */
async function loadOrganisations(selected) {
  const chooser = byId('organisation');
  let names;
  if (ctx.role === 'operator') {
    const page = await get('/organisations', { limit: 500 });
    names = page.items.map((o) => o.name);
  } else {
    names = [ctx.me.organisation];
  }
  if (selected && !names.includes(selected)) names.push(selected);
  chooser.replaceChildren(...names.map((name) => h('option', { value: name }, name)));
  chooser.value = selected ?? ctx.org;
}

/** After a sign-in or a reload: the user's role decides what is shown (a member gets nothing). */
async function start(claims) {
  const me = { username: claims.usr, organisation: claims.org };
  let user;
  try {
    user = await get(`/organisations/${seg(me.organisation)}/users/${seg(me.username)}`);
  } catch (error) {
    if (error.code === 'FORBIDDEN') {
      // A member: told why, and signed out, so that no token lingers in the tab.
      await api.signOut();
      showSignIn();
    }
    throw error;
  }
  ctx = {
    me,
    role: user.role,
    org: me.organisation,
    link,
    organisationsChanged: (name) => loadOrganisations(name ?? ctx.org),
  };
  byId('signed-in-as').textContent = `${me.username}@${me.organisation} (${user.role})`;
  byId('who').hidden = false;
  byId('sign-in').hidden = true;
  byId('nav').hidden = false;
  await loadOrganisations(orgOfRoute() ?? ctx.org);
  renderNav();
  if (!location.hash || location.hash === '#' || location.hash === '#/') {
    history.replaceState(null, '', link(ctx.role === 'operator' ? 'organisations' : 'users', ctx.org));
  }
  route();
  ready();
}

function renderNav() {
  const list = byId('screens');
  list.replaceChildren(
    ...SCREENS.filter((s) => !s.operator || ctx.role === 'operator').map((s) =>
      h('li', {}, h('a', { href: link(s.name, ctx.org), 'data-screen': s.name }, s.title)),
    ),
  );
}

/** The route's parts: `#/users/Acme` → ['users', 'Acme']. */
function routeParts() {
  const [name, org] = location.hash.replace(/^#\/?/, '').split('/');
  let decoded = null;
  if (org) {
    try {
      decoded = decodeURIComponent(org);
    } catch {
      decoded = null;
    }
  }
  return [name ?? '', decoded];
}

function orgOfRoute() {
  return routeParts()[1];
}

function route() {
  if (!ctx) return;
  clearAlert();
  clearStatus();
  const [name, org] = routeParts();
  const screen = SCREENS.find((s) => s.name === name && (!s.operator || ctx.role === 'operator')) ?? SCREENS[2];
  if (org && org !== ctx.org) {
    ctx.org = org;
    const chooser = byId('organisation');
    if (![...chooser.options].some((o) => o.value === org)) chooser.append(h('option', { value: org }, org));
    chooser.value = org;
    renderNav();
  }
  for (const a of byId('screens').querySelectorAll('a')) {
    if (a.dataset.screen === screen.name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  byId('organisation-field').hidden = screen.name === 'organisations';
  document.title = `${screen.title} · crm-auth console`;
  screen.module.render(ctx);
}

async function signIn(event) {
  event.preventDefault();
  const formElement = event.currentTarget;
  const button = formElement.querySelector('button[type="submit"]');
  const values = new FormData(formElement);
  button.disabled = true;
  clearAlert();
  try {
    const claims = await api.signIn(
      String(values.get('organisation')).trim(),
      String(values.get('username')).trim(),
      String(values.get('password')),
    );
    formElement.reset();
    await start(claims);
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  await api.signOut();
  history.replaceState(null, '', location.pathname);
  showSignIn();
  clearStatus();
  clearAlert();
  byId('sign-in').querySelector('input').focus();
}

function init() {
  byId('sign-in-form').addEventListener('submit', signIn);
  byId('sign-out').addEventListener('click', signOut);
  byId('organisation').addEventListener('change', (event) => {
    const [name] = routeParts();
    location.hash = link(name && name !== 'organisations' ? name : 'users', event.target.value);
  });
  window.addEventListener('hashchange', route);
  api.onSignedOut((error) => {
    showSignIn();
    showError(new ApiError(error.code, `${error.message} Sign in again.`));
  });
  const claims = api.resume();
  if (claims) {
    start(claims).catch((error) => {
      if (!ctx) showSignIn();
      showError(error);
    });
  } else {
    showSignIn();
  }
}

init();
