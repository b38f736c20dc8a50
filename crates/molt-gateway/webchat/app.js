// molt web chat: a client of the gateway's own WebSocket protocol (OpenClaw v4).
// Plain JavaScript, no dependencies and no build step. Text is only ever set with
// textContent or built into elements (replies' Markdown), never parsed as HTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'molt.webchat.token';
  // The secret the gateway asks for, written into the page by the gateway: token, password
  // or none. (st.token holds either secret.)
  const AUTH = (document.querySelector('meta[name="molt-auth"]') || {}).content || 'token';
  const SESSION_KEY = 'molt.webchat.session';
  const PAGE = 50; // history messages per page
  // Reconnect delays; the first is short because a handover successor already listens.
  const BACKOFF_MS = [250, 1000, 2000, 5000, 10000, 20000, 30000];

  const st = {
    ws: null,
    nextId: 1,
    pending: new Map(), // request id -> {resolve, reject}
    token: localStorage.getItem(TOKEN_KEY),
    session: localStorage.getItem(SESSION_KEY) || 'main',
    sessions: [],
    oldestSeq: null,
    hasMore: false,
    loadingOlder: false,
    runs: new Map(), // runId -> {el, text, tools: Map(callId -> details)}
    activeRun: null,
    outbox: null, // a chat.send not yet acknowledged: re-sent with its key after a reconnect
    attempt: 0,
    restarting: false,
    authFailed: false,
    lastFrame: 0,
    tickMs: 15000,
    retryTimer: 0,
    listTimer: 0,
  };

  // ---- connection -------------------------------------------------------------------

  function wsUrl() {
    const u = new URL('.', location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.hash = '';
    u.search = '';
    return u.href;
  }

  function setStatus(state, text) {
    const el = $('status');
    el.dataset.state = state;
    el.textContent = text || state;
    document.body.dataset.conn = state;
  }

  function connect() {
    clearTimeout(st.retryTimer);
    if (st.ws) return;
    st.authFailed = false;
    if (!st.restarting) setStatus(st.attempt ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    st.ws = ws;
    ws.onmessage = (e) => {
      st.lastFrame = Date.now();
      let f;
      try { f = JSON.parse(e.data); } catch (_) { return; }
      if (f.type === 'res') onResponse(f);
      else if (f.type === 'event') onEvent(ws, f.event, f.payload || {});
    };
    ws.onclose = (e) => onClose(ws, e);
  }

  function onClose(ws, e) {
    if (st.ws !== ws) return;
    st.ws = null;
    for (const p of st.pending.values()) p.reject(Object.assign(new Error('connection closed'), { closed: true }));
    st.pending.clear();
    if (st.authFailed) return; // the login dialog is up; a retry would only fail again
    if (e.code === 1012) st.restarting = true;
    setStatus(st.restarting ? 'restarting' : 'reconnecting');
    scheduleReconnect();
  }

  function scheduleReconnect() {
    const base = BACKOFF_MS[Math.min(st.attempt, BACKOFF_MS.length - 1)];
    st.attempt++;
    const delay = base * (0.8 + Math.random() * 0.4);
    clearTimeout(st.retryTimer);
    st.retryTimer = setTimeout(connect, delay);
  }

  function send(frame) {
    if (!st.ws || st.ws.readyState !== WebSocket.OPEN) throw Object.assign(new Error('not connected'), { closed: true });
    st.ws.send(JSON.stringify(frame));
  }

  function request(method, params) {
    return new Promise((resolve, reject) => {
      const id = 'w' + st.nextId++;
      try {
        send({ type: 'req', id, method, params });
      } catch (e) {
        reject(e);
        return;
      }
      st.pending.set(id, { resolve, reject, method });
    });
  }

  function onResponse(f) {
    const p = st.pending.get(f.id);
    if (!p) return;
    // `agent`-style methods answer twice; the first "accepted" is not the result.
    if (f.ok && f.payload && f.payload.status === 'accepted' && p.method === 'agent') return;
    st.pending.delete(f.id);
    if (f.ok) p.resolve(f.payload);
    else p.reject(Object.assign(new Error((f.error && f.error.message) || 'request failed'), { error: f.error || {} }));
  }

  function onEvent(ws, name, p) {
    switch (name) {
      case 'connect.challenge': return hello(ws);
      case 'tick': return;
      case 'shutdown':
        st.restarting = true;
        setStatus('restarting');
        return;
      case 'chat': return onChat(p);
      case 'agent': return onAgent(p);
      case 'sessions.changed': return refreshSessionsSoon();
      default: return;
    }
  }

  function platform() {
    return (navigator.userAgentData && navigator.userAgentData.platform) || navigator.platform || 'web';
  }

  async function hello(ws) {
    const params = {
      minProtocol: 4,
      maxProtocol: 4,
      client: { id: 'webchat-ui', version: '1', platform: platform(), mode: 'webchat' },
      role: 'operator',
      // Reset needs admin; the gateway grants what the token allows.
      scopes: ['operator.admin'],
      caps: ['tool-events'],
      locale: navigator.language || undefined,
      userAgent: navigator.userAgent,
    };
    if (st.token && AUTH === 'password') params.auth = { password: st.token };
    else if (st.token && AUTH === 'token') params.auth = { token: st.token };
    let ok;
    try {
      ok = await request('connect', params);
    } catch (e) {
      if (e.closed) return;
      const details = (e.error && e.error.details) || {};
      const code = String(details.code || '');
      if (code.startsWith('AUTH_') || (e.error && e.error.code === 'NOT_PAIRED')) {
        st.authFailed = true;
        if (st.ws === ws) ws.close();
        showLogin(authMessage(code, e.message));
      }
      // Anything else (a gateway handing over, say) closes the socket: onClose retries.
      return;
    }
    if (st.ws !== ws) return;
    if (st.token) localStorage.setItem(TOKEN_KEY, st.token);
    if (ok.policy && ok.policy.tickIntervalMs) st.tickMs = ok.policy.tickIntervalMs;
    st.attempt = 0;
    hideNotice();
    // "connected" means ready to chat: the session list and the conversation are loaded
    // (a message typed earlier would be wiped by the history reload).
    try {
      await request('sessions.subscribe', {});
      await loadSessions();
      await loadHistory(true);
      if (st.outbox) {
        // Sent before the connection dropped and not acknowledged: show it again and send
        // it with the same key, so the gateway runs it at most once.
        const key = st.outbox.idempotencyKey;
        if (!document.querySelector(`.msg.user[data-run="${CSS.escape(key)}"]`)) appendUser(st.outbox.message);
        // No reply bubble here: history made one if the turn is running, and its first
        // event makes one otherwise.
        await resend();
      }
    } catch (e) {
      if (e.closed) return;
      showNotice(e.message);
    }
    if (st.ws !== ws) return;
    st.restarting = false;
    setStatus('connected');
  }

  function authMessage(code, message) {
    switch (code) {
      case 'AUTH_TOKEN_MISSING': return st.token ? 'The gateway asked for a token.' : '';
      case 'AUTH_TOKEN_MISMATCH': return 'Wrong token: the gateway did not accept it. Check it and try again.';
      case 'AUTH_PASSWORD_MISSING': return st.token ? 'The gateway asked for a password.' : '';
      case 'AUTH_PASSWORD_MISMATCH': return 'Wrong password: the gateway did not accept it. Check it and try again.';
      case 'AUTH_RATE_LIMITED': return 'Too many failed sign-ins from this address: wait a minute, then try again.';
      default: return message || 'The gateway refused the connection.';
    }
  }

  // The watchdog: two missed ticks mean the connection is dead even if TCP has not noticed.
  setInterval(() => {
    if (st.ws && st.ws.readyState === WebSocket.OPEN && st.lastFrame && Date.now() - st.lastFrame > 2 * st.tickMs + 5000) {
      st.ws.close(4000, 'tick timeout');
    }
  }, 5000);
  window.addEventListener('online', () => { if (!st.ws && !st.authFailed) { st.attempt = 0; connect(); } });

  // ---- login --------------------------------------------------------------------------

  function showLogin(message) {
    setStatus('signed-out', 'signed out');
    const err = $('login-error');
    err.textContent = message || '';
    err.hidden = !message;
    const d = $('login');
    if (!d.open) d.showModal();
    $('token').focus();
  }

  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    st.token = $('token').value.trim() || null;
    $('token').value = '';
    $('login').close();
    st.attempt = 0;
    if (st.ws) st.ws.close();
    st.ws = null;
    connect();
  });
  $('login').addEventListener('cancel', (e) => e.preventDefault());

  $('signout').addEventListener('click', () => {
    localStorage.removeItem(TOKEN_KEY);
    st.token = null;
    st.authFailed = true;
    if (st.ws) st.ws.close();
    st.ws = null;
    clearTimeout(st.retryTimer);
    showLogin('');
  });

  // ---- sessions -------------------------------------------------------------------------

  async function loadSessions() {
    const r = await request('sessions.list', { limit: 100 });
    st.sessions = (r && r.sessions) || [];
    renderSessions();
  }

  function refreshSessionsSoon() {
    clearTimeout(st.listTimer);
    st.listTimer = setTimeout(() => { loadSessions().catch(() => {}); }, 300);
  }

  function shortKey(key) {
    const parts = String(key).split(':');
    return parts.length >= 3 && parts[0] === 'agent' ? parts.slice(2).join(':') : key;
  }

  function ago(ms) {
    if (!ms) return '';
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 60) return 'just now';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return new Date(ms).toLocaleDateString();
  }

  function sameSession(a, b) {
    return a === b || shortKey(a) === shortKey(b) && (!a.startsWith('agent:') || !b.startsWith('agent:'));
  }

  function renderSessions() {
    const ul = $('sessions');
    ul.textContent = '';
    // The session in view is listed even before its first message creates it.
    const rows = st.sessions.some((s) => sameSession(s.key, st.session))
      ? st.sessions
      : [{ key: st.session, label: shortKey(st.session) + ' (new)' }].concat(st.sessions);
    for (const s of rows) {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.key = s.key;
      if (sameSession(s.key, st.session)) b.setAttribute('aria-current', 'true');
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = s.label || s.displayName || shortKey(s.key);
      const meta = document.createElement('span');
      meta.className = 'meta';
      meta.textContent = [s.agentId, s.hasActiveRun ? 'running' : ago(s.updatedAt)].filter(Boolean).join(' \u00b7 ');
      b.append(name, meta);
      b.addEventListener('click', () => selectSession(s.key));
      li.append(b);
      ul.append(li);
    }
    $('session-title').textContent = shortKey(st.session);
  }

  async function selectSession(key) {
    st.session = key;
    localStorage.setItem(SESSION_KEY, key);
    st.activeRun = null;
    st.outbox = null;
    toggleSidebar(false);
    renderSessions();
    try {
      await loadHistory(true);
    } catch (e) {
      if (!e.closed) showNotice(e.message);
    }
    $('input').focus();
  }

  function randomId() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  $('new-session').addEventListener('click', async () => {
    try {
      const r = await request('sessions.create', { key: 'web-' + randomId().slice(0, 8) });
      await loadSessions();
      await selectSession(r.key);
    } catch (e) {
      showNotice('Could not create a session: ' + e.message);
    }
  });

  // Destructive buttons ask for a second press instead of a blocking confirm().
  function confirmable(button, label, action) {
    let armed = 0;
    button.addEventListener('click', async () => {
      if (!armed) {
        button.textContent = 'Press again to ' + label.toLowerCase();
        armed = setTimeout(() => { armed = 0; button.textContent = label; }, 4000);
        return;
      }
      clearTimeout(armed);
      armed = 0;
      button.textContent = label;
      try {
        await action();
      } catch (e) {
        showNotice(label + ' failed: ' + e.message);
      }
    });
  }
  confirmable($('reset'), 'Reset', async () => {
    await request('sessions.reset', { key: st.session });
    await loadHistory(true);
    await loadSessions();
  });
  confirmable($('delete'), 'Delete', async () => {
    await request('sessions.delete', { key: st.session });
    await loadSessions();
    await selectSession('main');
  });

  // ---- conversation -----------------------------------------------------------------------

  function textOf(content) {
    if (typeof content === 'string') return content;
    if (!Array.isArray(content)) return '';
    return content.filter((b) => b && b.type === 'text').map((b) => b.text).join('');
  }

  // ---- replies: a small, safe Markdown subset ------------------------------------------
  // Code fences, `code`, **strong**, *emphasis*, [text](https://…) and bare http(s) links,
  // built as DOM nodes from the text: nothing is parsed as HTML, and only http(s) URLs
  // become links. The raw text is kept per element, so deltas can be appended to it.
  const INLINE = /(`+)([^`\n]+?)\1|\*\*([^*\n]+?)\*\*|\*([^*\s](?:[^*\n]*[^*\s])?)\*|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)|(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"])/g;
  const FENCE = /^\s*```/;
  const raw = new WeakMap();

  function link(href, text) {
    const a = document.createElement('a');
    a.href = href;
    a.textContent = text;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    return a;
  }

  function inline(into, text) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) into.append(text.slice(last, m.index));
      let node;
      if (m[1]) {
        node = document.createElement('code');
        node.textContent = m[2];
      } else if (m[3] || m[4]) {
        node = document.createElement(m[3] ? 'strong' : 'em');
        node.textContent = m[3] || m[4];
      } else if (m[5]) {
        node = link(m[6], m[5]);
      } else {
        node = link(m[7], m[7]);
      }
      into.append(node);
      last = m.index + m[0].length;
    }
    if (last < text.length) into.append(text.slice(last));
  }

  // Sets an assistant message's text; an unclosed fence (a reply still streaming) shows
  // as code up to the end.
  function setReply(el, text) {
    raw.set(el, text);
    el.textContent = '';
    let prose = [];
    let code = null;
    const flushProse = () => {
      if (prose.length) inline(el, prose.join('\n'));
      prose = [];
    };
    const flushCode = () => {
      const pre = document.createElement('pre');
      const c = document.createElement('code');
      c.textContent = code.join('\n');
      pre.append(c);
      el.append(pre);
      code = null;
    };
    for (const line of text.split('\n')) {
      if (FENCE.test(line)) {
        if (code === null) {
          flushProse();
          code = [];
        } else {
          flushCode();
        }
      } else if (code === null) {
        prose.push(line);
      } else {
        code.push(line);
      }
    }
    flushProse();
    if (code !== null) flushCode();
  }

  function appendReply(el, delta) {
    setReply(el, (raw.get(el) || '') + delta);
  }

  function bubble(role) {
    const el = document.createElement('article');
    el.className = 'msg ' + role;
    const label = document.createElement('span');
    label.className = 'sr';
    label.textContent = role === 'user' ? 'You: ' : role === 'assistant' ? 'Agent: ' : '';
    const text = document.createElement('div');
    text.className = 'text';
    el.append(label, text);
    return el;
  }

  function toolItem(name, args) {
    const d = document.createElement('details');
    d.className = 'tool';
    const s = document.createElement('summary');
    s.textContent = 'Tool: ' + name;
    const a = document.createElement('pre');
    a.className = 'args';
    a.textContent = args === undefined ? '' : JSON.stringify(args, null, 2);
    const out = document.createElement('pre');
    out.className = 'output';
    d.append(s, a, out);
    return d;
  }

  // Renders transcript messages; tool results attach to their call's item.
  function renderMessages(messages, into, tools) {
    const frag = document.createDocumentFragment();
    for (const m of messages) {
      if (m.role === 'toolResult') {
        const d = tools.get(m.toolCallId);
        if (d) {
          d.querySelector('.output').textContent = textOf(m.content);
          if (m.isError) d.classList.add('failed');
        }
        continue;
      }
      const role = m.role === 'user' || m.role === 'assistant' ? m.role : 'system';
      const el = bubble(role);
      if (m.__openclaw && m.__openclaw.runId) el.dataset.run = m.__openclaw.runId;
      if (role === 'assistant') setReply(el.querySelector('.text'), textOf(m.content));
      else el.querySelector('.text').textContent = textOf(m.content);
      if (Array.isArray(m.content)) {
        for (const b of m.content) {
          if (b && b.type === 'toolCall') {
            const d = toolItem(b.name, b.arguments);
            tools.set(b.id, d);
            el.append(d);
          }
        }
      }
      frag.append(el);
    }
    into.append(frag);
  }

  function clearLog() {
    const log = $('log');
    for (const el of Array.from(log.children)) if (el.id !== 'older') el.remove();
    st.runs.clear();
  }

  async function loadHistory(reset) {
    const key = st.session;
    const r = await request('chat.history', { sessionKey: key, limit: PAGE });
    if (st.session !== key) return;
    if (r.sessionKey && r.sessionKey !== st.session) {
      st.session = r.sessionKey;
      localStorage.setItem(SESSION_KEY, r.sessionKey);
      renderSessions();
    }
    const log = $('log');
    if (reset) clearLog();
    const msgs = r.messages || [];
    const holder = document.createDocumentFragment();
    const tmp = document.createElement('div');
    renderMessages(msgs, tmp, new Map());
    holder.append(...tmp.childNodes);
    log.append(holder);
    st.oldestSeq = msgs.length ? seqOf(msgs[0]) : null;
    st.hasMore = !!r.hasMore;
    // A turn still running (we reconnected mid-stream, or another client started it):
    // follow it; its next delta carries the whole text so far.
    const info = r.sessionInfo || {};
    const active = (info.activeRunIds || [])[0];
    if (info.hasActiveRun && active) {
      st.activeRun = active;
      runView(active);
    } else {
      st.activeRun = null;
    }
    updateComposer();
    log.scrollTop = log.scrollHeight;
    if (st.hasMore && log.scrollHeight <= log.clientHeight) loadOlder();
  }

  function seqOf(m) {
    return m && m.__openclaw ? m.__openclaw.seq : null;
  }

  async function loadOlder() {
    if (!st.hasMore || st.loadingOlder || st.oldestSeq == null) return;
    st.loadingOlder = true;
    $('older').hidden = false;
    const key = st.session;
    try {
      const r = await request('chat.history', { sessionKey: key, limit: PAGE, cursor: st.oldestSeq });
      if (st.session !== key) return;
      const log = $('log');
      const before = log.scrollHeight;
      const tmp = document.createElement('div');
      const msgs = r.messages || [];
      renderMessages(msgs, tmp, new Map());
      $('older').after(...tmp.childNodes);
      log.scrollTop += log.scrollHeight - before;
      st.oldestSeq = msgs.length ? seqOf(msgs[0]) : st.oldestSeq;
      st.hasMore = !!r.hasMore && msgs.length > 0;
    } catch (e) {
      if (!e.closed) showNotice(e.message);
    } finally {
      st.loadingOlder = false;
      $('older').hidden = true;
    }
  }

  $('log').addEventListener('scroll', () => {
    if ($('log').scrollTop < 60) loadOlder();
  });

  // The bubble of a run, made on first sight.
  function runView(runId) {
    let r = st.runs.get(runId);
    if (r) return r;
    const el = bubble('assistant');
    el.classList.add('streaming');
    el.setAttribute('aria-busy', 'true');
    el.dataset.run = runId;
    $('log').append(el);
    r = { el, text: el.querySelector('.text'), tools: new Map() };
    st.runs.set(runId, r);
    return r;
  }

  function atBottom() {
    const log = $('log');
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function follow(fn) {
    const stick = atBottom();
    fn();
    if (stick) $('log').scrollTop = $('log').scrollHeight;
  }

  function onChat(p) {
    if (!sameSession(p.sessionKey || '', st.session)) return;
    const r = runView(p.runId);
    follow(() => {
      switch (p.state) {
        case 'delta': {
          const t = p.message ? textOf(p.message.content) : null;
          if (t != null) setReply(r.text, t);
          else appendReply(r.text, p.deltaText || '');
          break;
        }
        case 'final': {
          const t = p.message ? textOf(p.message.content) : null;
          if (t) setReply(r.text, t);
          r.el.classList.remove('streaming');
          r.el.classList.add('done');
          endRun(p.runId);
          break;
        }
        case 'aborted':
          r.el.classList.remove('streaming');
          r.el.classList.add('stopped', 'done');
          endRun(p.runId);
          break;
        case 'error':
          r.el.classList.remove('streaming');
          r.el.classList.add('failed', 'done');
          r.text.textContent = p.errorMessage || 'The turn failed.';
          endRun(p.runId);
          break;
        default:
          if (st.activeRun == null) { st.activeRun = p.runId; updateComposer(); }
      }
    });
  }

  function onAgent(p) {
    const d = p.data || {};
    if (p.stream !== 'tool' || !sameSession(d.sessionKey || '', st.session)) return;
    const r = runView(p.runId);
    follow(() => {
      if (d.phase === 'start') {
        const item = toolItem(d.name, d.args);
        r.tools.set(d.toolCallId, item);
        // A reply's tools ran before the text that follows them.
        r.el.insertBefore(item, r.text);
      } else if (d.phase === 'result') {
        const item = r.tools.get(d.toolCallId);
        if (item) {
          const res = d.result || {};
          item.querySelector('.output').textContent = textOf(res.content);
          if (d.isError) item.classList.add('failed');
        }
      }
    });
  }

  function endRun(runId) {
    const r = st.runs.get(runId);
    if (r) r.el.removeAttribute('aria-busy');
    if (st.activeRun === runId) st.activeRun = null;
    if (st.outbox && st.outbox.idempotencyKey === runId) st.outbox = null;
    updateComposer();
    refreshSessionsSoon();
  }

  function updateComposer() {
    $('abort').hidden = !st.activeRun;
  }

  async function resend() {
    const o = st.outbox;
    try {
      await request('chat.send', o);
      if (st.outbox === o) st.outbox = null;
    } catch (e) {
      if (!e.closed) {
        st.outbox = null;
        const r = st.runs.get(o.idempotencyKey);
        if (r && !r.text.textContent) r.el.remove();
        st.runs.delete(o.idempotencyKey);
        if (st.activeRun === o.idempotencyKey) st.activeRun = null;
        updateComposer();
        showNotice('Not sent: ' + e.message);
      }
    }
  }

  function appendUser(text) {
    const u = bubble('user');
    u.querySelector('.text').textContent = text;
    $('log').append(u);
  }

  async function submit() {
    const input = $('input');
    const text = input.value.trim();
    if (!text) return;
    if (!st.ws || st.ws.readyState !== WebSocket.OPEN || document.body.dataset.conn !== 'connected') {
      showNotice('Not connected yet; the message is still in the box.');
      return;
    }
    input.value = '';
    hideNotice();
    const runId = randomId();
    follow(() => {
      appendUser(text);
      runView(runId);
    });
    $('log').scrollTop = $('log').scrollHeight;
    st.activeRun = runId;
    updateComposer();
    st.outbox = { sessionKey: st.session, message: text, idempotencyKey: runId };
    await resend();
  }

  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });
  $('input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  $('abort').addEventListener('click', async () => {
    const runId = st.activeRun;
    if (!runId) return;
    try {
      await request('chat.abort', { sessionKey: st.session, runId });
    } catch (e) {
      if (!e.closed) showNotice('Stop failed: ' + e.message);
    }
  });

  // ---- chrome -------------------------------------------------------------------------------

  function showNotice(text) {
    const n = $('notice');
    n.textContent = text;
    n.hidden = false;
  }
  function hideNotice() {
    $('notice').hidden = true;
  }

  function toggleSidebar(open) {
    const side = $('sidebar');
    const show = open === undefined ? !side.classList.contains('open') : open;
    side.classList.toggle('open', show);
    $('menu').setAttribute('aria-expanded', String(show));
    if (show) {
      const first = side.querySelector('button');
      if (first) first.focus();
    }
  }
  $('menu').addEventListener('click', () => toggleSidebar());
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && $('sidebar').classList.contains('open')) {
      toggleSidebar(false);
      $('menu').focus();
    }
  });

  // ---- start ----------------------------------------------------------------------------------
  $('session-title').textContent = shortKey(st.session);
  if (AUTH === 'password') {
    $('token-label').textContent = 'Gateway password';
    $('login-help').textContent = 'Type the gateway password (gateway.auth.password in molt.toml, or MOLT_GATEWAY_AUTH_PASSWORD). This browser keeps it until you sign out.';
  }
  // With no secret to ask for there is nothing to sign out of.
  if (AUTH === 'none') $('signout').hidden = true;
  if (st.token || AUTH === 'none') connect();
  else showLogin('');
})();
