/* subtitler operator console (protocol v1, docs/protocol.md), no dependencies.
 *
 * Two WebSockets: /ws/control (token, commands, status every second) and /ws/view with
 * langs ["*"] (the live transcript in every language). Both reconnect by themselves with
 * back-off; the viewer resumes from its last seq. The token is asked for once and kept in
 * localStorage; it is asked again only when the server refuses it. A link
 * console.html#token=… also works (the fragment never reaches the server's logs).
 *
 * Every text from the server reaches the page through textContent.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "subtitler.token";
  var HEARTBEAT_TIMEOUT_MS = 5000;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var MAX_ENTRIES = 3000;
  var WHISPER_LANGUAGES = ("af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl " +
    "gu ha haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my " +
    "ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz " +
    "vi yi yo zh yue").split(" ");

  var $ = function (id) { return document.getElementById(id); };
  var wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;

  var state = {
    authed: false,
    paused: null,
    language: null,
    session: null,
    seq: 0,
    status: null,
    commands: [],     // commands sent, oldest first: {type, at}
  };
  window.subtitlerConsole = { state: state };

  // ---- small helpers -------------------------------------------------------------------------
  function text(el, s) { if (el.textContent !== s) el.textContent = s; }

  function fmtClock(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "";
    var s = Math.max(0, Math.floor(seconds));
    var h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
    var mm = (m < 10 ? "0" : "") + m, ss = (r < 10 ? "0" : "") + r;
    return h ? h + ":" + mm + ":" + ss : mm + ":" + ss;
  }

  function fmtSeconds(v) {
    return typeof v === "number" && isFinite(v) ? v.toFixed(v < 10 ? 1 : 0) + " s" : "—";
  }

  var langNames = null;
  try { langNames = new Intl.DisplayNames(["en"], { type: "language" }); } catch (e) { /* old browser */ }
  function langName(code) {
    try { return langNames ? langNames.of(code) : code; } catch (e) { return code; }
  }

  var messageTimer = 0;
  function say(msg, isError) {
    var el = $("message");
    text(el, msg);
    el.classList.toggle("error", !!isError);
    clearTimeout(messageTimer);
    if (!isError) messageTimer = setTimeout(function () { text(el, ""); }, 4000);
  }

  function backoff(attempt) {
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    return Math.max(BACKOFF_MIN_MS, Math.min(BACKOFF_MAX_MS, base * (0.8 + 0.4 * Math.random())));
  }

  // A WebSocket that reconnects with back-off and treats 5 s of silence as a dead line.
  function Line(path, handlers) {
    var self = this;
    var ws = null, attempt = 0, retry = 0, watchdog = 0, stopped = false;
    function arm() {
      clearTimeout(watchdog);
      watchdog = setTimeout(function () { lost(); }, HEARTBEAT_TIMEOUT_MS);
    }
    function drop() {
      var s = ws;
      ws = null;
      clearTimeout(watchdog);
      if (s) {
        s.onopen = s.onmessage = s.onclose = s.onerror = null;
        try { s.close(); } catch (e) { /* closing already */ }
      }
    }
    function lost(ev) {
      drop();
      handlers.down(ev);
      if (stopped) return;
      clearTimeout(retry);
      retry = setTimeout(open, backoff(attempt++));
    }
    function open() {
      clearTimeout(retry);
      stopped = false;
      var s = new WebSocket(wsBase + path);
      ws = s;
      arm();
      s.onopen = function () { arm(); handlers.open(self); };
      s.onmessage = function (ev) {
        arm();
        var m;
        try { m = JSON.parse(ev.data); } catch (e) { return; }
        if (m && typeof m === "object") handlers.message(m, self);
      };
      s.onclose = function (ev) { lost(ev); };
    }
    this.open = open;
    this.healthy = function () { attempt = 0; };
    this.send = function (obj) {
      if (!ws || ws.readyState !== WebSocket.OPEN) return false;
      ws.send(JSON.stringify(obj));
      return true;
    };
    this.stop = function () { stopped = true; clearTimeout(retry); drop(); };
    this.restart = function () { drop(); attempt = 0; open(); };
  }

  function pill(id, s) { $(id).setAttribute("data-state", s); }

  // ---- token ----------------------------------------------------------------------------------
  function storedToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }
  function storeToken(t) {
    try { if (t) localStorage.setItem(TOKEN_KEY, t); else localStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ }
  }

  var token = "";
  var hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    token = hash.get("token");
    history.replaceState(null, "", location.pathname + location.search);  // out of sight, out of history
  } else {
    token = storedToken();
  }

  var dialog = $("token-dialog");
  function askToken(error) {
    text($("token-error"), error || "");
    $("token-input").value = "";
    if (!dialog.open) dialog.showModal();
    $("token-input").focus();
  }
  $("token-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var t = $("token-input").value.trim();
    if (!t) return;
    token = t;
    dialog.close();
    text($("token-error"), "");
    control.restart();
  });
  $("btn-token").addEventListener("click", function () { askToken(""); });

  // ---- control line ----------------------------------------------------------------------------
  var control = new Line("/ws/control", {
    open: function (line) {
      if (!token) { line.stop(); pill("pill-control", "down"); askToken(""); return; }
      pill("pill-control", "connecting");
      line.send({ type: "auth", token: token });
    },
    message: function (m, line) {
      if (m.type === "ok" && m.command === "auth") {
        state.authed = true;
        if (Array.isArray(m.source_languages) && m.source_languages.length) languageChoices(m.source_languages);
        if (Array.isArray(m.files)) showFiles(m.files);
        storeToken(token);
        line.healthy();
        pill("pill-control", "live");
        setControls(true);
        return;
      }
      if (m.type === "ok") { onOk(m); return; }
      if (m.type === "error") {
        if (m.code === "unauthorized") {
          state.authed = false;
          storeToken("");
          token = "";
          line.stop();
          pill("pill-control", "down");
          setControls(false);
          askToken(m.message ? "Refused: " + m.message : "That token was refused.");
          return;
        }
        var cmd = state.commands.shift();
        if (cmd && cmd.type === "set_language") showLanguage(state.language);
        say((cmd ? cmd.type + ": " : "") + (m.message || m.code || "error"), true);
        return;
      }
      if (m.type === "status") onStatus(m);
    },
    down: function (ev) {
      state.authed = false;
      state.commands = [];
      setControls(false);
      if (ev && ev.code === 1008 && !token) return;  // refused: the dialog is up
      pill("pill-control", token ? "connecting" : "down");
    },
  });

  function setControls(on) {
    ["btn-pause", "btn-clear", "sel-language"].forEach(function (id) { $(id).disabled = !on; });
  }

  function command(obj) {
    if (!state.authed || !control.send(obj)) { say("not connected", true); return; }
    state.commands.push({ type: obj.type, at: Date.now() });
  }

  function onOk(m) {
    var sent = state.commands.shift();
    var what = m.command || (sent && sent.type);
    if (what === "pause") { showPaused(true); say("Captioning paused."); }
    else if (what === "resume") { showPaused(false); say("Captioning resumed."); }
    else if (what === "clear") say("Screens cleared.");
    else if (what === "set_language") {
      state.language = typeof m.language === "string" ? m.language : sel.value;
      showLanguage(state.language);
      say(state.language === "auto" ? "Source language: detected per utterance." : "Source language: " + (langName(state.language) || state.language) + ".");
    }
  }

  $("btn-pause").addEventListener("click", function () {
    command({ type: state.paused ? "resume" : "pause" });
  });
  $("btn-clear").addEventListener("click", function () { command({ type: "clear" }); });

  var sel = $("sel-language");
  var choices = "";
  function languageChoices(codes) {
    // the model's languages, as the server lists them at auth (Whisper's otherwise)
    codes = codes.filter(function (c) { return typeof c === "string" && c && c !== "auto"; });
    var key = codes.join(",");
    if (key === choices) return;
    choices = key;
    while (sel.options.length > 1) sel.remove(1);
    codes.map(function (c) { return [langName(c) || c, c]; })
      .sort(function (a, b) { return a[0].localeCompare(b[0]); })
      .forEach(function (pair) {
        var o = document.createElement("option");
        o.value = pair[1];
        o.textContent = pair[1] === pair[0] ? pair[1] : pair[0] + " (" + pair[1] + ")";
        sel.appendChild(o);
      });
    if (state.language) showLanguage(state.language);
  }
  languageChoices(WHISPER_LANGUAGES);
  sel.addEventListener("change", function () { command({ type: "set_language", language: sel.value }); });

  function showLanguage(lang) {
    if (!lang || document.activeElement === sel) return;
    if (!Array.prototype.some.call(sel.options, function (o) { return o.value === lang; })) {
      var o = document.createElement("option");
      o.value = lang;
      o.textContent = lang;
      sel.appendChild(o);
    }
    sel.value = lang;
  }

  function showPaused(p) {
    state.paused = p;
    var b = $("btn-pause");
    text(b, p ? "Resume" : "Pause");
    b.classList.toggle("resume", p);
    $("state-paused").hidden = !p;
  }

  // ---- status ---------------------------------------------------------------------------------
  var peakDb = -60, peakAt = 0;
  function onStatus(s) {
    state.status = s;
    if (typeof s.paused === "boolean" && state.paused !== s.paused) showPaused(s.paused);
    if (typeof s.language === "string" && s.language !== state.language) {
      state.language = s.language;
      showLanguage(s.language);
    }
    if (typeof s.language === "string") text($("fig-language"), s.language);

    var db = typeof s.level_db === "number" && isFinite(s.level_db) ? s.level_db : -120;
    var frac = Math.max(0, Math.min(1, (db + 60) / 60));
    $("meter-bar").style.width = (frac * 100).toFixed(1) + "%";
    var now = Date.now();
    if (db >= peakDb || now - peakAt > 3000) { peakDb = db; peakAt = now; }
    $("meter-peak").style.left = "calc(" + (Math.max(0, Math.min(1, (peakDb + 60) / 60)) * 100).toFixed(1) + "% - 2px)";
    text($("level"), db <= -120 ? "— dB" : db.toFixed(0) + " dB");

    var vad = $("vad").parentNode;
    vad.setAttribute("data-speech", s.in_speech ? "true" : "false");
    text($("vad"), s.paused ? "paused" : (s.in_speech ? "speech" : "silence"));

    figure("fig-lag", fmtSeconds(s.lag), s.lag > 5 ? "bad" : (s.lag > 2 ? "warn" : ""));
    figure("fig-latency", fmtSeconds(s.final_latency_p50), s.final_latency_p50 > 3 ? "warn" : "");
    figure("fig-viewers", typeof s.viewers === "number" ? String(s.viewers) : "—", "");
    figure("fig-dropped", typeof s.dropped_audio === "number" ? String(s.dropped_audio) : "—", s.dropped_audio > 0 ? "bad" : "");
    figure("fig-audio", typeof s.audio_seconds === "number" ? fmtClock(s.audio_seconds) : "—", "");
  }

  function figure(id, value, cls) {
    var el = $(id);
    text(el, value);
    el.className = cls || "";
  }

  // ---- transcript (viewer line) -----------------------------------------------------------------
  var box = $("transcript");
  var entries = new Map();  // utterance id → entry element
  var follow = true;
  var sentSince = 0;

  box.addEventListener("scroll", function () {
    follow = box.scrollTop + box.clientHeight >= box.scrollHeight - 40;
    $("btn-follow").hidden = follow;
  });
  $("btn-follow").addEventListener("click", function () {
    follow = true;
    box.scrollTop = box.scrollHeight;
    $("btn-follow").hidden = true;
  });

  function atEnd(change) {
    change();
    if (follow) box.scrollTop = box.scrollHeight;
  }

  function makeEntry(id) {
    var el = document.createElement("div");
    el.className = "entry";
    el.setAttribute("data-id", String(id));
    var time = document.createElement("span"); time.className = "time";
    var lang = document.createElement("span"); lang.className = "lang";
    var t = document.createElement("span"); t.className = "text";
    var c = document.createElement("span"); c.className = "c";
    var tail = document.createElement("span"); tail.className = "t";
    t.appendChild(c); t.appendChild(tail);
    el.appendChild(time); el.appendChild(lang); el.appendChild(t);
    el._tr = new Map();
    return el;
  }

  function placeEntry(el, id) {
    var empty = $("transcript-empty");
    if (empty) empty.remove();
    // entries are in utterance order; a late one goes before the first younger one
    var kids = box.children;
    for (var i = kids.length - 1; i >= 0; i--) {
      var kid = kids[i];
      if (!kid.classList.contains("entry")) { box.insertBefore(el, kid.nextSibling); return; }
      if (Number(kid.getAttribute("data-id")) < id) { box.insertBefore(el, kid.nextSibling); return; }
    }
    box.insertBefore(el, box.firstChild);
  }

  function setTranslation(el, lang, value) {
    var row = el._tr.get(lang);
    if (!row) {
      row = document.createElement("div");
      row.className = "tr";
      var l = document.createElement("span"); l.className = "lang"; l.textContent = lang;
      var t = document.createElement("span"); t.className = "txt"; t.lang = lang;
      row.appendChild(l); row.appendChild(t);
      el._tr.set(lang, row);
      el.appendChild(row);
    }
    text(row.lastChild, value);
  }

  function onCaption(m) {
    if (typeof m.id !== "number") return;
    var final = m.kind === "final";
    var s = typeof m.text === "string" ? m.text : "";
    var el = entries.get(m.id);
    atEnd(function () {
      if (final && !s.trim()) {  // retracted: it was noise
        if (el) { el.remove(); entries.delete(m.id); }
        return;
      }
      if (!el) {
        el = makeEntry(m.id);
        entries.set(m.id, el);
        placeEntry(el, m.id);
      }
      el.className = "entry " + (final ? "final" : "partial");
      text(el.children[0], fmtClock(m.start));
      text(el.children[1], typeof m.lang === "string" ? m.lang : "");
      el.children[2].lang = typeof m.lang === "string" ? m.lang : "";
      var committed = !final && typeof m.committed === "string" && s.indexOf(m.committed) === 0 ? m.committed : (final ? s : "");
      text(el.children[2].firstChild, committed);
      text(el.children[2].lastChild, s.slice(committed.length));
      var tr = m.translations && typeof m.translations === "object" ? m.translations : {};
      Object.keys(tr).forEach(function (lang) {
        if (typeof tr[lang] === "string") setTranslation(el, lang, tr[lang]);
      });
    });
    trim();
  }

  function onTranslation(m) {
    if (typeof m.id !== "number" || typeof m.lang !== "string" || typeof m.text !== "string") return;
    var el = entries.get(m.id);
    if (!el) return;
    atEnd(function () { setTranslation(el, m.lang, m.text); });
  }

  function divider(label) {
    atEnd(function () {
      var d = document.createElement("div");
      d.className = "divider";
      d.textContent = label;
      box.appendChild(d);
    });
  }

  function trim() {
    while (entries.size > MAX_ENTRIES) {
      var first = entries.keys().next().value;
      entries.get(first).remove();
      entries.delete(first);
    }
  }

  function resetTranscript() {
    entries.clear();
    box.textContent = "";
  }

  var viewer = new Line("/ws/view", {
    open: function (line) {
      pill("pill-view", "connecting");
      sentSince = state.seq;
      var hello = { type: "hello", langs: ["*"], since: state.seq };
      if (state.session) hello.session = state.session;
      line.send(hello);
    },
    message: function (m, line) {
      if (m.type === "welcome") {
        var other = state.session !== null && m.session !== state.session;
        if (m.reset || other) {
          state.seq = 0;
          if (other) {  // keep the old session's lines above a mark; its ids start again
            entries.clear();
            divider("— new session " + m.session + " —");
          } else {
            resetTranscript();
          }
        }
        state.session = m.session;
        text($("session"), m.session ? String(m.session) : "—");
        document.title = "subtitler · console · " + (m.session || "");
        if (other && !m.reset && sentSince > 0) { line.restart(); return; }  // from its start
        line.healthy();
        pill("pill-view", "live");
        if (typeof m.paused === "boolean" && state.paused === null) showPaused(m.paused);
        loadFiles();
        return;
      }
      if (typeof m.seq === "number") {
        if (m.seq <= state.seq) return;
        state.seq = m.seq;
      }
      if (m.type === "caption") onCaption(m);
      else if (m.type === "translation") onTranslation(m);
      else if (m.type === "clear") divider("— screens cleared —");
      else if (m.type === "status" && !state.authed) onStatus(m);  // figures even before the token
    },
    down: function () { pill("pill-view", "connecting"); },
  });

  // ---- transcript files -------------------------------------------------------------------------
  // Listed by the server as [{"name": "captions.srt", "format": "srt", "url": "/…"}], either in the
  // auth reply's "files" or from GET api/session ({"session": …, "files": [...]}).
  var filesFor = null;
  function showFiles(files) {
    var list = $("files");
    list.textContent = "";
    (Array.isArray(files) ? files : []).forEach(function (f) {
      if (!f || typeof f.url !== "string") return;
      var url;
      try { url = new URL(f.url, location.href); } catch (e) { return; }
      if (url.origin !== location.origin) return;  // only the server's own files
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = url.href;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = String(f.name || url.pathname.split("/").pop());
      li.appendChild(a);
      if (f.format) {
        var fmt = document.createElement("span");
        fmt.className = "fmt";
        fmt.textContent = String(f.format);
        li.appendChild(fmt);
      }
      list.appendChild(li);
    });
    if (!list.children.length) {
      var none = document.createElement("li");
      none.className = "muted";
      none.textContent = "none yet";
      list.appendChild(none);
    }
  }

  function loadFiles() {
    if (filesFor === state.session) return;
    filesFor = state.session;
    fetch("api/session", { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (info) {
      showFiles(info && info.files);
    }).catch(function () {
      if ($("files").querySelector("a")) return;  // listed by the auth reply already
      var list = $("files");
      list.textContent = "";
      var li = document.createElement("li");
      li.className = "muted";
      li.textContent = "in the session folder " + (state.session || "") + " on the server";
      list.appendChild(li);
    });
  }

  // ---- start ------------------------------------------------------------------------------------
  setControls(false);
  viewer.open();
  if (token) control.open();
  else askToken("");
})();
