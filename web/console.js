/* subtitler operator console (protocol v1, docs/protocol.md), no dependencies but client.js.
 *
 * Two WebSockets: /ws/control (token, commands, status every second) and /ws/view with
 * langs ["*"] (the live transcript in every language), both of this page's room
 * (/rooms/NAME/ws/… under /rooms/NAME/, /ws/… at the root). Both reconnect by themselves with
 * back-off; the viewer resumes from its last seq (client.js does both). The token is asked for
 * once and kept in localStorage, per room; it is asked again only when the server refuses it.
 * A link console.html#token=… also works (the fragment never reaches the server's logs).
 * The room's audience page is offered per language with its QR code (qr.svg?lang=…).
 *
 * Every text from the server reaches the page through textContent.
 */
(function () {
  "use strict";

  var client = window.subtitlerClient;
  var room = client.roomName();
  // one token per room (a room's token opens nothing of another room); the default room keeps
  // the key it always had
  var TOKEN_KEY = "subtitler.token" + (room ? ":" + room : "");
  var MAX_ENTRIES = 3000;
  var WHISPER_LANGUAGES = ("af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl " +
    "gu ha haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my " +
    "ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz " +
    "vi yi yo zh yue").split(" ");

  var $ = function (id) { return document.getElementById(id); };

  var state = {
    room: room,       // null: the default room, at the root
    authed: false,
    paused: null,
    language: null,
    status: null,
    commands: [],     // commands sent, oldest first: {type, at}
    viewer: null,     // the caption stream's state (seq, session, …), see client.Viewer
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

  function pill(id, s) { $(id).setAttribute("data-state", s); }

  // ---- token ----------------------------------------------------------------------------------
  function storedToken() { return client.load(TOKEN_KEY, ""); }
  function storeToken(t) { client.save(TOKEN_KEY, t); }

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
  var control = new client.Line(client.wsUrl("control"), {
    label: "subtitler console",
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
    // utterances skipped to keep up with live audio, and their seconds
    figure("fig-skipped", typeof s.skipped_utterances === "number"
      ? s.skipped_utterances + (s.skipped_utterances ? " (" + fmtSeconds(s.skipped_seconds) + ")" : "") : "—",
      s.skipped_utterances > 0 ? "bad" : "");
    var t = s.transcripts;  // the writer's health: a full disk shows here, the screens go on
    figure("fig-transcripts", !t ? "—" : (t.ok ? (t.lost ? t.lost + " lost" : "ok")
      : "failing: " + t.error + " (" + t.pending + " waiting)"), !t ? "" : (t.ok && !t.lost ? "" : "bad"));
    // remote audio: whether a sender is connected, and how long no audio has come
    var idle = typeof s.audio_idle_s === "number" && s.audio_idle_s >= 2 ? " · no audio for " + fmtSeconds(s.audio_idle_s) : "";
    figure("fig-sender", s.sender === true ? "connected" + idle : (s.sender === false ? "none" + idle : "—"),
      s.sender === false ? "warn" : "");
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

  // The records (partial → final → translations, by id) are client.js's; this draws them.
  var captions = new client.Captions(MAX_ENTRIES);

  function onCaption(m) {
    var r = captions.caption(m);
    if (!r) return;
    var el = entries.get(r.id);
    atEnd(function () {
      if (r.retracted) {  // it was noise
        if (el) { el.remove(); entries.delete(r.id); }
        return;
      }
      var rec = r.rec;
      if (!el) {
        el = makeEntry(rec.id);
        entries.set(rec.id, el);
        placeEntry(el, rec.id);
      }
      el.className = "entry " + rec.kind;
      text(el.children[0], fmtClock(rec.start));
      text(el.children[1], rec.lang);
      el.children[2].lang = rec.lang;
      text(el.children[2].firstChild, rec.committed);
      text(el.children[2].lastChild, rec.text.slice(rec.committed.length));
      Object.keys(rec.translations).forEach(function (lang) {
        setTranslation(el, lang, rec.translations[lang]);
      });
      noteLanguages(client.languagesOf(rec));
    });
    r.dropped.forEach(function (id) {  // the oldest, beyond MAX_ENTRIES
      var old = entries.get(id);
      if (old) { old.remove(); entries.delete(id); }
    });
  }

  function onTranslation(m) {
    if (!captions.translation(m)) return;
    var el = entries.get(m.id);
    if (!el) return;
    atEnd(function () { setTranslation(el, m.lang, m.text); });
    noteLanguages([m.lang]);
  }

  function divider(label) {
    atEnd(function () {
      var d = document.createElement("div");
      d.className = "divider";
      d.textContent = label;
      box.appendChild(d);
    });
  }

  function resetTranscript() {
    entries.clear();
    captions.clear();
    box.textContent = "";
  }

  var viewer = new client.Viewer({
    label: "subtitler console",
    spreadMs: 0,  // one operator: the usual 0.5 s back-off (the spread is for crowds of screens)
    langs: function () { return ["*"]; },
    welcome: function (m, info) {
      if (info.reset) {
        if (info.otherSession) {  // keep the old session's lines above a mark; its ids start again
          entries.clear();
          captions.clear();
          divider("— new session " + m.session + " —");
        } else {
          resetTranscript();
        }
      }
      text($("session"), m.session ? String(m.session) : "—");
      document.title = "subtitler · console · " + (room ? room + " · " : "") + (m.session || "");
      if (info.resync) return;  // asked again from its start, at once
      if (typeof m.paused === "boolean" && state.paused === null) showPaused(m.paused);
      // the spoken language first, then the room's translations
      if (viewer.state.sourceLanguage) noteLanguages([viewer.state.sourceLanguage]);
      noteLanguages(viewer.state.languages);
      loadFiles();
    },
    event: function (m) {
      if (m.type === "caption") onCaption(m);
      else if (m.type === "translation") onTranslation(m);
      else if (m.type === "clear") divider("— screens cleared —");
      else if (m.type === "status" && !state.authed) onStatus(m);  // figures even before the token
    },
    conn: function (c) { pill("pill-view", c === "live" ? "live" : "connecting"); },
  });
  state.viewer = viewer.state;

  // ---- phones: the audience page in each language, with its QR code ------------------------------
  // Languages as the room names them (the welcome's) and as they show up in captions.
  var phoneLangs = [];
  function noteLanguages(codes) {
    var added = false;
    codes.forEach(function (code) {
      if (!client.isLanguageCode(code)) return;
      if (phoneLangs.some(function (l) { return client.sameLanguage(l, code); })) return;
      phoneLangs.push(code);
      added = true;
    });
    if (added) showPhones();
  }

  function showPhones() {
    var list = $("phones");
    list.textContent = "";
    (phoneLangs.length ? phoneLangs : [""]).forEach(function (code) {
      var q = code ? "?lang=" + encodeURIComponent(code) : "";
      var fig = document.createElement("figure");
      fig.className = "qr";
      var a = document.createElement("a");
      a.href = "live.html" + q;
      a.target = "_blank";
      a.rel = "noopener";
      var img = document.createElement("img");
      img.alt = "QR code of the audience page" + (code ? " in " + langName(code) : "");
      img.width = img.height = 132;
      img.src = "qr.svg" + q;
      img.addEventListener("error", function () { img.remove(); });  // keep the link if no QR
      a.appendChild(img);
      var cap = document.createElement("figcaption");
      var name = document.createElement("span");
      name.textContent = code ? client.autonym(code) : "as spoken";
      cap.appendChild(name);
      if (code) {
        var c = document.createElement("code");
        c.textContent = code;
        cap.appendChild(c);
      }
      a.appendChild(cap);
      fig.appendChild(a);
      list.appendChild(fig);
    });
  }
  showPhones();

  // ---- which room this is: its name at once, its title from the venue ---------------------------
  function showRoom(label) {
    var el = $("room");
    el.hidden = !label;
    text(el, label || "");
  }
  showRoom(room || "");
  fetch("/api/venue", { cache: "no-store" }).then(function (r) {
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }).then(function (venue) {
    var rooms = venue && Array.isArray(venue.rooms) ? venue.rooms : [];
    var mine = rooms.filter(function (x) { return x && (room ? x.name === room : rooms.length === 1); })[0];
    if (mine && typeof mine.title === "string" && mine.title.trim() && mine.title !== mine.name) {
      showRoom(mine.title + " (" + mine.name + ")");
    } else if (mine && rooms.length > 1) {
      showRoom(mine.name);
    }
  }).catch(function () { /* an older server: no venue */ });

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
    if (filesFor === viewer.state.session) return;
    filesFor = viewer.state.session;
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
      li.textContent = "in the session folder " + (viewer.state.session || "") + " on the server";
      list.appendChild(li);
    });
  }

  // ---- start ------------------------------------------------------------------------------------
  setControls(false);
  viewer.start();
  if (token) control.open();
  else askToken("");
})();
