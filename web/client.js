/* subtitler client: what every page shares (protocol v1, docs/protocol.md). No dependencies and
 * no build step: a page loads it with <script src="client.js"> before its own script, and uses
 * window.subtitlerClient.
 *
 *  - language codes: the one rule of subtitler/langcodes.py (a browser test keeps the two equal);
 *  - addresses: a page under /rooms/NAME/ talks to /rooms/NAME/ws/…, one at the root to /ws/…
 *    (the default room of `subtitler run`);
 *  - Line: a WebSocket that reconnects with back-off and jitter, and treats 5 s without a
 *    message as a dead connection (the server sends a `status` in every second without other news);
 *  - Viewer: a /ws/view stream on a Line: hello, welcome, resuming from the last seq of the same
 *    session, dropping replayed events already seen;
 *  - Captions: utterances by id (partial → final → translations of the same id, retractions).
 *
 * Nothing here touches the page's DOM: pages draw, and put text there through textContent.
 */
(function () {
  "use strict";

  var PROTOCOL = 1;
  var HEARTBEAT_TIMEOUT_MS = 5000;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  // A screen that loses a live connection waits 0.25 s to this long before the first retry: when
  // an edge dies or a room resets, thousands of screens lose theirs in the same millisecond, and
  // a server taking them all in one burst (a handshake costs many messages) delays every screen.
  var RECONNECT_SPREAD_MS = 2000;
  var FILE_SERVER = "ws://127.0.0.1:8765";  // a page opened as a file (an OBS local-file source)

  // ---- language codes ---------------------------------------------------------------------------
  // 2–3 letters, then up to three subtags of 2–8 letters or digits: es, yue, zh-Hant, zho_Hant, pt-BR.
  var LANGUAGE_CODE = /^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$/;

  function isLanguageCode(code) {
    return typeof code === "string" && LANGUAGE_CODE.test(code);
  }

  // The form codes are compared in: zh_Hant → zh-hant ('-' and '_' are one separator).
  function canonical(code) {
    return String(code).replace(/_/g, "-").toLowerCase();
  }

  function sameLanguage(a, b) {
    return typeof a === "string" && typeof b === "string" && canonical(a) === canonical(b);
  }

  var nameCache = {};
  // A language's name in that language ("中文", "English", "español"): what a reader looks for.
  function autonym(code) {
    if (!(code in nameCache)) {
      var name = "";
      var tag = String(code).replace(/_/g, "-");  // zho_Hant → zho-Hant, a BCP 47 tag
      try { name = new Intl.DisplayNames([tag], { type: "language" }).of(tag) || ""; } catch (e) { /* not a tag Intl knows */ }
      nameCache[code] = name && canonical(name) !== canonical(code) ?
        name.charAt(0).toLocaleUpperCase(code) + name.slice(1) : "";
    }
    return nameCache[code] || code;
  }

  // ---- addresses --------------------------------------------------------------------------------
  var ROOM_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;  // subtitler/protocol.py ROOM_NAME
  var ROOM_PATH = /^\/rooms\/([^/]+)\//;

  // The room a page belongs to, from its path (/rooms/NAME/…); null at the root (the default room).
  function roomName(pathname) {
    var m = ROOM_PATH.exec(pathname === undefined ? location.pathname : pathname);
    return m && ROOM_NAME.test(m[1]) ? m[1] : null;
  }

  // The path every address of this page's room starts with: "/rooms/NAME/" or "/".
  function roomPrefix(pathname) {
    var name = roomName(pathname);
    return name ? "/rooms/" + name + "/" : "/";
  }

  // ws(s)://this server/[rooms/NAME/]ws/ENDPOINT for endpoint "view", "control", "audio", "venue".
  function wsUrl(endpoint, prefix) {
    var path = (prefix === undefined ? roomPrefix() : prefix) + "ws/" + endpoint;
    if (location.protocol === "http:" || location.protocol === "https:") {
      return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
    }
    return FILE_SERVER + path;
  }

  // An address the user gave (?server=…): ws://host:8765 → its /ws/ENDPOINT, ws://host:8765/rooms/hall
  // → that room's; a full endpoint URL is kept. Anything unusable: this page's own.
  function serverUrl(raw, endpoint) {
    if (raw) {
      try {
        var u = new URL(raw, location.href);
        if (u.protocol === "http:") u.protocol = "ws:";
        if (u.protocol === "https:") u.protocol = "wss:";
        if (u.protocol === "ws:" || u.protocol === "wss:") {
          if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws/" + endpoint;
          else if (/^\/rooms\/[^/]+\/?$/.test(u.pathname)) u.pathname = u.pathname.replace(/\/?$/, "/ws/" + endpoint);
          return u.href;
        }
      } catch (e) { /* fall through to the default */ }
    }
    return wsUrl(endpoint);
  }

  // ?server=ws://a:8765,ws://b:8765 → one endpoint URL per server (a host and its edges serve the
  // same screens: a Viewer given several moves to the next after a failed attempt). One or none:
  // a list of one.
  function serverUrls(raw, endpoint) {
    var parts = String(raw || "").split(",").map(function (p) { return p.trim(); }).filter(Boolean);
    if (!parts.length) return [serverUrl("", endpoint)];
    var out = [];
    parts.forEach(function (p) {
      var u = serverUrl(p, endpoint);
      if (out.indexOf(u) < 0) out.push(u);
    });
    return out;
  }

  // ---- storage (private windows may refuse it) ----------------------------------------------------
  function load(key, def) {
    try { var v = localStorage.getItem(key); return v === null ? def : v; } catch (e) { return def; }
  }
  function save(key, value) {
    try {
      if (value === null || value === undefined || value === "") localStorage.removeItem(key);
      else localStorage.setItem(key, String(value));
    } catch (e) { /* private mode: the choice lasts this visit */ }
  }

  // ---- a connection that comes back by itself ---------------------------------------------------------
  function backoff(attempt) {
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    // Jitter, so that every screen in the building does not knock at the same instant.
    return Math.round(Math.max(BACKOFF_MIN_MS, Math.min(BACKOFF_MAX_MS, base * (0.8 + 0.4 * Math.random()))));
  }

  function spread(maxMs) {
    var least = BACKOFF_MIN_MS / 2;
    return Math.round(least + Math.random() * Math.max(0, maxMs - least));
  }

  // A WebSocket to `url` (a string, or a function giving one) that reconnects with back-off after
  // any failure and treats HEARTBEAT_TIMEOUT_MS without a message as a dead line. handlers:
  // open(line) once connected, message(obj, line) for each JSON object, down(closeEvent|undefined)
  // when the connection is lost (a reconnect is already scheduled unless stop() was called).
  // `attempt` counts failures since healthy() (the page calls it when the server accepted it).
  // handlers.spreadMs: the first retry after losing a healthy connection waits a random
  // 0.25 s–spreadMs (many clients losing one server at once); failed attempts back off as usual.
  function Line(url, handlers) {
    var self = this;
    var ws = null, retry = 0, watchdog = 0, stopped = true, wasHealthy = false;
    this.attempt = 0;
    this.nextRetryMs = 0;
    this.label = handlers.label || "subtitler";

    function arm() {
      clearTimeout(watchdog);
      watchdog = setTimeout(function () {
        console.warn(self.label + ": no message for " + HEARTBEAT_TIMEOUT_MS / 1000 + " s; reconnecting");
        lost(4000, "heartbeat timeout");
      }, HEARTBEAT_TIMEOUT_MS);
    }
    function drop(code, reason) {
      var s = ws;
      ws = null;
      clearTimeout(watchdog);
      if (s) {
        s.onopen = s.onmessage = s.onclose = s.onerror = null;
        try { s.close(code, reason); } catch (e) { /* closing already */ }
      }
    }
    function lost(code, reason, ev) {
      drop(code, reason);
      if (!stopped) {
        // Spread only a loss after the server took us (healthy): a first connection that
        // fails, or a retry that fails, backs off as usual.
        self.nextRetryMs = wasHealthy && handlers.spreadMs ? spread(handlers.spreadMs) : backoff(self.attempt);
        wasHealthy = false;
        self.attempt += 1;
        clearTimeout(retry);
        retry = setTimeout(open, self.nextRetryMs);
      }
      if (handlers.down) handlers.down(ev);
    }
    function open() {
      clearTimeout(retry);
      drop(1000, "");
      stopped = false;
      var target = typeof url === "function" ? url() : url;
      var s;
      try {
        s = new WebSocket(target);
      } catch (e) {
        console.warn(self.label + ": bad server URL", target, e);
        lost(1000, "");
        return;
      }
      ws = s;
      arm();  // a connect that hangs counts as dead too
      s.onopen = function () { arm(); if (handlers.open) handlers.open(self); };
      s.onmessage = function (ev) {
        arm();
        if (typeof ev.data !== "string") return;
        var m;
        try { m = JSON.parse(ev.data); } catch (e) { return; }
        if (m && typeof m === "object" && !Array.isArray(m)) handlers.message(m, self);
      };
      s.onclose = function (ev) { lost(1000, "closed " + ev.code, ev); };
      s.onerror = function () { /* onclose follows */ };
    }

    this.open = open;
    this.healthy = function () { self.attempt = 0; wasHealthy = true; };
    this.connected = function () { return !!ws && ws.readyState === WebSocket.OPEN; };
    this.send = function (obj) {
      if (!ws || ws.readyState !== WebSocket.OPEN) return false;
      ws.send(JSON.stringify(obj));
      return true;
    };
    this.stop = function () { stopped = true; clearTimeout(retry); drop(1000, ""); };
    // At once, without waiting for a back-off (a resync, a new token).
    this.restart = function () { self.attempt = 0; open(); };
  }

  // ---- the caption stream -------------------------------------------------------------------------
  // A /ws/view connection that resumes where it left off. options:
  //   url       the endpoint (default: this page's room's /ws/view), or a list of equivalent ones
  //             (a host and its edges): each lost or failed connection moves on to the next, and
  //             resumes there with since/session, so nothing is missed or shown twice
  //   langs()   the languages to ask for (hello.langs)
  //   welcome(m, info)  each welcome; info.reset: the page must drop what it shows (the server
  //             said reset, or another session answered: a restarted server counts ids from 1
  //             again); info.hard: the server said reset (redraw at once, no fade);
  //             info.otherSession: the session changed; info.resync:
  //             a reconnect from the start of the new session's history follows at once
  //   event(m)  every other event, in seq order, each at most once
  //   conn(c)   "connecting" | "live" | "reconnecting"
  // `state` is the page's to show (and the tests' to read).
  function Viewer(options) {
    var state = {
      seq: 0,             // last seq processed: sent as `since` on reconnect
      session: null,
      conn: "connecting",
      connects: 0,        // welcomes received
      attempt: 0,         // failed attempts since the last welcome (back-off exponent)
      nextRetryMs: 0,
      languages: [],      // the welcome's: spoken and translated into so far, and the room's targets
      sourceLanguage: null,
      paused: false,
      server: null,       // the endpoint in use (with a list: which of them)
    };
    var sentSince = 0;
    var urls = Array.isArray(options.url) ? options.url.slice() : null;
    var current = 0;

    function target() {
      if (urls && urls.length) return urls[current % urls.length];
      if (typeof options.url === "string") return options.url;
      return typeof options.url === "function" ? options.url() : wsUrl("view");
    }
    var label = options.label || "subtitler viewer";

    function setConn(c) {
      state.conn = c;
      if (options.conn) options.conn(c, state);
    }

    function welcome(m, line) {
      var other = state.session !== null && m.session !== state.session;
      state.languages = Array.isArray(m.languages) ? m.languages.filter(isLanguageCode) : [];
      state.sourceLanguage = typeof m.source_language === "string" ? m.source_language : null;
      state.paused = !!m.paused;
      if (m.protocol !== PROTOCOL) console.warn(label + ": server speaks protocol", m.protocol, "(expected " + PROTOCOL + ")");
      if (m.reset || other) state.seq = 0;
      state.session = m.session === undefined ? null : m.session;
      // A restarted server (a new session) has its own seq counter and did not know our `since`:
      // ask again from the start of its history.
      var resync = other && !m.reset && sentSince > 0;
      if (options.welcome) options.welcome(m, { reset: !!m.reset || other, hard: !!m.reset, otherSession: other, resync: resync });
      if (resync) {
        sentSince = 0;
        line.restart();
        return;
      }
      state.connects += 1;
      line.healthy();
      state.attempt = 0;
      setConn("live");
    }

    var line = new Line(function () { state.server = target(); return state.server; }, {
      label: label,
      spreadMs: options.spreadMs === undefined ? RECONNECT_SPREAD_MS : options.spreadMs,
      open: function (l) {
        sentSince = state.seq;
        var hello = { type: "hello", langs: options.langs ? options.langs() : ["*"], since: state.seq };
        // With the session it came from, `since` cannot be mistaken for a number of another
        // session (a restarted server counts from 1 again): the server answers reset instead.
        if (state.session) hello.session = state.session;
        l.send(hello);
      },
      message: function (m, l) {
        if (m.type === "welcome") { welcome(m, l); return; }
        if (typeof m.seq === "number") {
          if (m.seq <= state.seq) return;  // seen before (a replay overlapping what we had)
          state.seq = m.seq;
        }
        if (m.type === "status") state.paused = !!m.paused;  // also the heartbeat
        if (m.type === "error") console.warn(label + ": server error", m.code, m.message);
        if (options.event) options.event(m);
      },
      down: function () {
        if (urls && urls.length > 1) current = (current + 1) % urls.length;  // try another server
        state.attempt = line.attempt;
        state.nextRetryMs = line.nextRetryMs;
        setConn("reconnecting");
      },
    });

    this.state = state;
    this.line = line;
    this.start = function () { setConn("connecting"); line.open(); };
    // Ask again with other languages (a hello is once per connection), resuming where it was.
    this.reconnect = function () { line.restart(); };
  }

  // ---- captions by utterance id ----------------------------------------------------------------------
  // Each utterance is one record: partials rewrite it, the final replaces them, a final with empty
  // text retracts it (noise), translations are added to it as they come. Only ids received since
  // the last clear are known: a late translation cannot bring back a caption that was cleared.
  // The oldest records beyond `limit` are forgotten (a long session stays small).
  function Captions(limit) {
    this.limit = limit || 1000;
    this.byId = new Map();
  }

  // A caption event → {id, rec, added, retracted, dropped: [ids forgotten]}, or null if malformed.
  Captions.prototype.caption = function (m) {
    if (typeof m.id !== "number") return null;
    var final = m.kind === "final";
    var text = typeof m.text === "string" ? m.text : "";
    var rec = this.byId.get(m.id) || null;
    if (final && !text.trim()) {
      this.byId.delete(m.id);
      return { id: m.id, rec: rec, added: false, retracted: true, dropped: [] };
    }
    var added = !rec;
    if (added) {
      rec = { id: m.id, translations: {} };
      this.byId.set(m.id, rec);
    }
    rec.kind = final ? "final" : "partial";
    rec.text = text;
    // the part later partials keep (the final keeps all of it)
    rec.committed = final ? text :
      (typeof m.committed === "string" && text.indexOf(m.committed) === 0 ? m.committed : "");
    rec.lang = typeof m.lang === "string" ? m.lang : "";
    rec.start = m.start;
    rec.end = m.end;
    rec.history = !!m.history;
    var tr = m.translations;
    if (tr && typeof tr === "object") {
      Object.keys(tr).forEach(function (lang) {
        if (typeof tr[lang] === "string") rec.translations[lang] = tr[lang];
      });
    }
    return { id: m.id, rec: rec, added: added, retracted: false, dropped: this.trim() };
  };

  // A translation event → the record it completes, or null (malformed, or an id not known).
  Captions.prototype.translation = function (m) {
    if (typeof m.id !== "number" || typeof m.lang !== "string" || typeof m.text !== "string") return null;
    var rec = this.byId.get(m.id);
    if (!rec) return null;
    rec.translations[m.lang] = m.text;
    return rec;
  };

  Captions.prototype.has = function (id) { return this.byId.has(id); };
  Captions.prototype.get = function (id) { return this.byId.get(id) || null; };
  Captions.prototype.clear = function () { this.byId.clear(); };
  Captions.prototype.forEach = function (fn) { this.byId.forEach(function (rec) { fn(rec); }); };

  Captions.prototype.trim = function () {
    var out = [];
    while (this.byId.size > this.limit) {
      var first = this.byId.keys().next().value;
      this.byId.delete(first);
      out.push(first);
    }
    return out;
  };

  // The languages a record is available in: the spoken one and its translations.
  function languagesOf(rec) {
    var out = [];
    if (isLanguageCode(rec.lang)) out.push(rec.lang);
    Object.keys(rec.translations).forEach(function (l) { if (isLanguageCode(l)) out.push(l); });
    return out;
  }

  // What a record reads in `key`: "source" is what was spoken; a language code is the caption
  // itself when spoken in it, else its translation (translationsOnly: only a translation).
  // → {text, committed, lang, kind} or null when there is none (yet).
  function textIn(rec, key, translationsOnly) {
    if (key === "source" || (!translationsOnly && sameLanguage(rec.lang, key))) {
      return { text: rec.text, committed: rec.committed, lang: rec.lang, kind: rec.kind };
    }
    var t = translationOf(rec.translations, key);
    return t === null ? null : { text: t, committed: t, lang: key, kind: "final" };
  }

  function translationOf(translations, key) {
    if (!translations) return null;
    if (typeof translations[key] === "string") return translations[key];
    var keys = Object.keys(translations);
    for (var i = 0; i < keys.length; i++) {
      if (sameLanguage(keys[i], key) && typeof translations[keys[i]] === "string") return translations[keys[i]];
    }
    return null;
  }

  window.subtitlerClient = {
    PROTOCOL: PROTOCOL,
    HEARTBEAT_TIMEOUT_MS: HEARTBEAT_TIMEOUT_MS,
    LANGUAGE_CODE: LANGUAGE_CODE,
    isLanguageCode: isLanguageCode,
    canonical: canonical,
    sameLanguage: sameLanguage,
    autonym: autonym,
    ROOM_NAME: ROOM_NAME,
    roomName: roomName,
    roomPrefix: roomPrefix,
    wsUrl: wsUrl,
    serverUrl: serverUrl,
    serverUrls: serverUrls,
    load: load,
    save: save,
    backoff: backoff,
    spread: spread,
    RECONNECT_SPREAD_MS: RECONNECT_SPREAD_MS,
    Line: Line,
    Viewer: Viewer,
    Captions: Captions,
    languagesOf: languagesOf,
    textIn: textIn,
    translationOf: translationOf,
  };
})();
