// The Moitessier demo page: a chat room over Server-Sent Events, and a
// notifications panel and a Handler listener over one WebSocket, all with
// the hub's HTTP API. Message text is only ever set with textContent.
"use strict";

const ROOM = "room.lobby"; // scope of the chat room (Shared listener)
const NOTIFY = "notify"; // scope of the notifications (Private listener)
const HELLO = "hello"; // scope of the Handler listener
const KEEP = 200; // messages each panel shows and remembers
const HISTORY = "24h"; // what a newcomer to the chat room sees of it first

const $ = (id) => document.getElementById(id);

// me is the person this page acts as, and how it got its token: from
// POST /dev/token (a development hub), or from the URL's #token=….
const me = { name: "", token: "", dev: false };

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

function setState(id, state) {
  $(id).dataset.state = state;
  $(id).textContent = state;
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

// Log shows one listener's messages and remembers them in localStorage with
// the cursor of the last one, so that a reload shows them again and listens
// from just after the last: event ids and seqs are cursors.
class Log {
  constructor(what, list) {
    this.list = list;
    this.key = "moitessier-demo/" + encodeURIComponent(me.name) + "/" + what;
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(this.key));
    } catch (e) {
      // Unreadable: start afresh.
    }
    this.s = saved && Array.isArray(saved.msgs) ? saved : { listener: "", created: "", last: 0, msgs: [] };
    this.s.msgs.forEach((m) => this.show(m));
  }

  // since is where to listen from: after the last message shown or, when
  // this browser remembers none, the cursor the hub holds for this person.
  get since() {
    return this.s.last > 0 ? this.s.last : "resume";
  }

  // attach records the listener the hub is listening to. It returns false
  // when the remembered messages belong to an older listener of the same
  // ID (it was deleted and made anew) and the hub was not told to resume:
  // listen again, from "resume".
  attach(info, reset) {
    const same = this.s.listener === info.id && this.s.created === info.created;
    if (!reset && (same || this.s.listener === "")) {
      this.s.listener = info.id;
      this.s.created = info.created;
      this.save();
      return true;
    }
    this.s = { listener: info.id, created: info.created, last: 0, msgs: [] };
    this.list.replaceChildren(el("li", "note", "The listener was made anew; older messages are gone."));
    this.save();
    return reset;
  }

  // add shows a message unless it was shown already.
  add(m) {
    if (m.seq <= this.s.last) return;
    this.s.last = m.seq;
    this.s.msgs.push(m);
    if (this.s.msgs.length > KEEP) this.s.msgs.splice(0, this.s.msgs.length - KEEP);
    this.save();
    this.show(m);
  }

  show(m) {
    const li = el("li", m.sender === me.name ? "mine" : "");
    li.dataset.seq = m.seq;
    const when = new Date(m.created).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.append(
      el("span", "meta", when + " · #" + m.seq),
      el("span", "sender", m.sender === me.name ? "you" : m.sender),
      el("span", "text", m.text),
    );
    this.list.append(li);
    while (this.list.children.length > KEEP) this.list.firstElementChild.remove();
    this.list.scrollTop = this.list.scrollHeight;
  }

  save() {
    try {
      localStorage.setItem(this.key, JSON.stringify(this.s));
    } catch (e) {
      // Storage full or off: the page still works, a reload resumes from the hub's cursor.
    }
  }
}

// getToken gets a token for me.name from a development hub, or takes the
// one in the URL's #token=… and asks the hub whose it is.
async function getToken() {
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) {
    me.token = given;
    me.name = (await api("GET", "/v1/whoami")).sub;
    return;
  }
  const r = await fetch("/dev/token?sub=" + encodeURIComponent(me.name), { method: "POST" });
  if (r.status === 404) {
    throw new Error("This hub mints no development tokens: mint one with `moitessier token` and open /#token=… with it.");
  }
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error((body && body.error) || "token: " + r.status + " " + r.statusText);
  me.token = body.token;
  me.dev = true;
}

// renewToken gets a fresh development token before a reconnect; a given
// token cannot be renewed.
async function renewToken() {
  if (!me.dev) return;
  try {
    await getToken();
  } catch (e) {
    setStatus(e.message, true);
  }
}

// api calls the hub with the token and returns the JSON answer, or throws
// the hub's error message.
async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + me.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new Error((data && data.error) || r.status + " " + r.statusText);
  return data;
}

function backoff(c) {
  const ms = Math.min(15000, 500 * 2 ** c.retries);
  c.retries = Math.min(c.retries + 1, 8);
  return ms / 2 + Math.random() * ms / 2;
}

// The chat room: one EventSource on the Shared listener of ROOM.
const chat = { es: null, log: null, retries: 0 };

function openChat() {
  if (chat.es) chat.es.close();
  // start: a person who was never in the room (no cursor on the hub)
  // starts with its last HISTORY; anyone else resumes where they were.
  const q = new URLSearchParams({ scope: ROOM, since: String(chat.log.since), start: HISTORY, access_token: me.token });
  const es = new EventSource("/v1/events?" + q);
  chat.es = es;
  setState("chat-state", "connecting");
  es.addEventListener("ready", (e) => {
    const r = JSON.parse(e.data);
    if (!chat.log.attach(r.listener, r.reset)) {
      es.close();
      openChat();
      return;
    }
    chat.retries = 0;
    setState("chat-state", "live");
  });
  es.addEventListener("message", (e) => chat.log.add(JSON.parse(e.data)));
  es.addEventListener("close", (e) => {
    // The hub ends the stream. When it shuts down, the EventSource
    // reconnects by itself, sending the last id it saw as Last-Event-ID;
    // an expired token needs a new one first.
    if (chat.es === es && JSON.parse(e.data).reason === "token_expired") reconnectChat();
  });
  es.addEventListener("error", (e) => {
    if (chat.es !== es) return;
    if (e.data) {
      // The hub's own error event: this stream ends for good.
      setStatus("Chat: " + JSON.parse(e.data).error, true);
      reconnectChat();
    } else if (es.readyState === EventSource.CLOSED) {
      // Refused (a bad token, a hub shutting down): the EventSource gives up.
      reconnectChat();
    } else {
      setState("chat-state", "reconnecting");
    }
  });
}

function reconnectChat() {
  chat.es.close();
  chat.es = null;
  setState("chat-state", "reconnecting");
  setTimeout(async () => {
    await renewToken();
    openChat();
  }, backoff(chat));
}

// The WebSocket: the Private listener of NOTIFY and the Handler listener
// of HELLO, each under a ref; and dispatches, answered under theirs.
const ws = { sock: null, retries: 0, n: 0, pending: new Map() };
const subs = {
  inbox: { type: "private", scopes: [NOTIFY], state: "ws-state", log: null },
  hello: { type: "handler", scopes: [HELLO], state: "handled-state", log: null },
};

// closeWS closes the WebSocket, if any, without reconnecting, and fails
// the dispatches that wait for an answer on it.
function closeWS() {
  const sock = ws.sock;
  ws.sock = null;
  if (sock) sock.close(1000);
  for (const [, p] of ws.pending) p.reject(new Error("Disconnected before the hub answered; it may have been sent."));
  ws.pending.clear();
}

function openWS() {
  closeWS();
  const u = new URL("/v1/ws", location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.searchParams.set("access_token", me.token);
  const sock = new WebSocket(u);
  ws.sock = sock;
  for (const ref in subs) setState(subs[ref].state, "connecting");
  sock.onopen = () => {
    for (const ref in subs) {
      const s = subs[ref];
      sock.send(JSON.stringify({ op: "listen", ref, type: s.type, scopes: s.scopes, since: s.log.since }));
    }
  };
  sock.onmessage = (e) => {
    const f = JSON.parse(e.data);
    const sub = subs[f.ref];
    switch (f.type) {
      case "listening":
        if (!sub.log.attach(f.listener, f.reset)) {
          sock.close(); // listen again from "resume"
          return;
        }
        ws.retries = 0;
        setState(sub.state, "live");
        break;
      case "messages":
        f.messages.forEach((m) => sub.log.add(m));
        // Shown and saved: tell the hub, which moves the cursor it holds
        // for this person only on such acks, never because it wrote.
        sock.send(JSON.stringify({ op: "ack", ref: f.ref, seq: f.messages[f.messages.length - 1].seq }));
        break;
      case "dispatched":
      case "error":
        settle(f);
        break;
    }
  };
  sock.onclose = (e) => {
    if (ws.sock !== sock) return;
    closeWS();
    for (const ref in subs) setState(subs[ref].state, "reconnecting");
    // 4001: the token expired. Any other close: the hub went away or
    // dropped a slow reader; each listen resumes from its last seq.
    setTimeout(async () => {
      await renewToken();
      openWS();
    }, e.code === 4001 ? 0 : backoff(ws));
  };
}

// settle answers a dispatch, or reports an error of a listen.
function settle(f) {
  const p = ws.pending.get(f.ref);
  if (p) {
    ws.pending.delete(f.ref);
    if (f.type === "dispatched") p.resolve(f.result);
    else p.reject(new Error(f.error.error));
    return;
  }
  if (f.type === "error") {
    if (f.error.code === "shutting_down") {
      // The hub is going away; the close that follows reconnects.
      if (subs[f.ref]) setState(subs[f.ref].state, "reconnecting");
      return;
    }
    if (subs[f.ref]) setState(subs[f.ref].state, "error");
    setStatus(f.error.error, true);
  }
}

function wsDispatch(req) {
  return new Promise((resolve, reject) => {
    if (!ws.sock || ws.sock.readyState !== WebSocket.OPEN) {
      reject(new Error("Not connected; try again in a moment."));
      return;
    }
    const ref = "d" + ++ws.n;
    ws.pending.set(ref, { resolve, reject });
    ws.sock.send(JSON.stringify({ op: "dispatch", ref, ...req }));
  });
}

// bindForm sends the text of a form's input with send, and shows its error.
function bindForm(form, input, send) {
  const err = el("p", "form-error");
  $(form).after(err);
  $(form).addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $(input).value;
    if (!text.trim()) return;
    err.textContent = "";
    try {
      await send(text);
      $(input).value = "";
    } catch (x) {
      err.textContent = x.message;
    }
  });
}

async function main() {
  const buttons = document.querySelectorAll(".send button");
  buttons.forEach((b) => (b.disabled = true));
  me.name = (new URLSearchParams(location.search).get("name") || "").trim();
  $("name").value = me.name;
  if (!me.name && !location.hash.includes("token=")) {
    setStatus("Pick a name to join, then open this page again under another name in a second window.");
    $("name").focus();
    return;
  }
  try {
    await getToken();
  } catch (e) {
    setStatus(e.message, true);
    return;
  }
  $("name").value = me.name;
  document.title = me.name + " · Moitessier demo";
  setStatus(me.dev ? "Signed in with a development token." : "Signed in with the token in the URL.");

  chat.log = new Log("chat", $("chat-log"));
  subs.inbox.log = new Log("notes", $("notes-log"));
  subs.hello.log = new Log("hello", $("handled-log"));
  bindForm("chat-form", "chat-text", (text) => api("POST", "/v1/dispatch", { scope: ROOM, text }));
  bindForm("notes-form", "notes-text", (text) =>
    wsDispatch({ scope: NOTIFY, text, to: [$("notes-to").value.trim()] }));
  bindForm("handled-form", "handled-text", (text) => {
    const h = $("handled-handler").value;
    return wsDispatch({ scope: HELLO, text, handlers: h ? [h] : [] });
  });
  buttons.forEach((b) => (b.disabled = false));
  openChat();
  openWS();
  // A page kept in the back/forward cache is frozen: it must not hold its
  // connections, or the hub would go on delivering to it (and moving the
  // cursor it holds for this person). Close them; listen again on return.
  addEventListener("pagehide", () => {
    if (chat.es) chat.es.close();
    chat.es = null;
    closeWS();
  });
  addEventListener("pageshow", (e) => {
    if (!e.persisted) return;
    openChat();
    openWS();
  });
}

main();
