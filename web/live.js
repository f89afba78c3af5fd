/* subtitler audience page: one room's captions on a phone, in the language the reader picks.
 *
 * The stream is /ws/view of this page's room (client.js: resume, back-off, captions by id). It
 * asks for every language ("*") and picks here, so that changing the language redraws at once
 * from what is already on the phone, back to the first line, without a reconnect. Newest at the
 * bottom; the page follows the newest line unless the reader scrolled up to read back.
 * Language, text size and theme are kept in localStorage (the language per room).
 * Caption text only ever reaches the page through textContent.
 */
(function () {
  "use strict";

  var client = window.subtitlerClient;
  var SIZES = [15, 17, 19, 21, 24, 27, 31, 36, 42];
  var DEFAULT_SIZE = 21;
  var MAX_LINES = 2000;
  var TYPING_MS = 12000;     // "…" while the newest utterance has nothing in this language, at most this long
  var FOLLOW_SLACK_PX = 48;  // this close to the bottom still counts as following

  var $ = function (id) { return document.getElementById(id); };
  var room = client.roomName();
  var KEY = "subtitler.live.";
  var LANG_KEY = KEY + "lang" + (room ? ":" + room : "");
  var params = new URLSearchParams(location.search);
  var body = document.body;
  var feed = $("feed");
  var picker = $("lang");

  // ---- choices ------------------------------------------------------------------------------------
  function validChoice(v) { return v === "source" || client.isLanguageCode(v); }

  var asked = (params.get("lang") || "").trim();
  var choice = {
    // ?lang= (a QR code's) first, then what this reader picked last time, else decided at the welcome
    lang: validChoice(asked) ? asked : (validChoice(client.load(LANG_KEY, "")) ? client.load(LANG_KEY, "") : null),
    size: Number(client.load(KEY + "size", DEFAULT_SIZE)),
    theme: client.load(KEY + "theme", ""),
  };
  if (SIZES.indexOf(choice.size) < 0) choice.size = DEFAULT_SIZE;
  if (choice.theme !== "light" && choice.theme !== "dark") {
    choice.theme = window.matchMedia && matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark";
  }

  function applySize() {
    document.documentElement.style.setProperty("--size", choice.size + "px");
    $("smaller").disabled = choice.size === SIZES[0];
    $("bigger").disabled = choice.size === SIZES[SIZES.length - 1];
  }
  function stepSize(d) {
    var i = Math.max(0, Math.min(SIZES.length - 1, SIZES.indexOf(choice.size) + d));
    var keep = following;
    choice.size = SIZES[i];
    client.save(KEY + "size", choice.size);
    applySize();
    if (keep) toEnd();
  }
  $("smaller").addEventListener("click", function () { stepSize(-1); });
  $("bigger").addEventListener("click", function () { stepSize(1); });

  function applyTheme() {
    body.setAttribute("data-theme", choice.theme);
    var meta = document.querySelector('meta[name="theme-color"]');
    if (meta) meta.content = choice.theme === "light" ? "#f7f7f4" : "#0f1419";
  }
  $("theme").addEventListener("click", function () {
    choice.theme = choice.theme === "light" ? "dark" : "light";
    client.save(KEY + "theme", choice.theme);
    applyTheme();
  });

  // ---- the language picker ----------------------------------------------------------------------------
  var languages = [];  // the room's, in the welcome's order, then as captions bring new ones

  function label(code) {
    return code === "source" ? "As spoken" : client.autonym(code);
  }

  function knows(code) {
    return languages.some(function (l) { return client.sameLanguage(l, code); });
  }

  function addLanguages(codes) {
    var added = false;
    codes.forEach(function (c) {
      if (client.isLanguageCode(c) && !knows(c)) { languages.push(c); added = true; }
    });
    if (added) fillPicker();
  }

  function fillPicker() {
    var codes = ["source"].concat(languages);
    if (choice.lang && choice.lang !== "source" && !knows(choice.lang)) codes.push(choice.lang);  // asked for, not seen yet
    picker.textContent = "";
    codes.forEach(function (code) {
      var o = document.createElement("option");
      o.value = code;
      o.textContent = label(code);
      if (code !== "source") o.lang = code;
      picker.appendChild(o);
    });
    picker.value = choice.lang || "source";
  }

  picker.addEventListener("change", function () { pick(picker.value, true); });

  function pick(lang, byReader) {
    if (!validChoice(lang)) return;
    // the room's own spelling of the code (zh_hant → zh-Hant), so the picker shows it selected
    for (var i = 0; i < languages.length; i++) if (client.sameLanguage(languages[i], lang)) lang = languages[i];
    var changed = lang !== choice.lang;
    choice.lang = lang;
    if (byReader) {
      client.save(LANG_KEY, lang);
      // a reload, or the link shared from here, keeps the language
      params.set("lang", lang);
      history.replaceState(null, "", location.pathname + "?" + params.toString() + location.hash);
    }
    fillPicker();
    if (changed) redraw();
  }

  // No choice yet: the reader's own language if the room has it, else what was spoken.
  function defaultLanguage() {
    var wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || ""];
    for (var i = 0; i < wanted.length; i++) {
      var w = String(wanted[i]);
      var exact = languages.filter(function (l) { return client.sameLanguage(l, w); })[0];
      if (exact) return exact;
      var primary = client.canonical(w).split("-")[0];
      var near = languages.filter(function (l) { return client.canonical(l).split("-")[0] === primary; })[0];
      if (near) return near;
    }
    return "source";
  }

  // ---- the feed --------------------------------------------------------------------------------------
  var captions = new client.Captions(MAX_LINES);
  var lines = new Map();  // utterance id → its <p>
  var following = true;
  var newest = null;      // the newest record: the one the "…" is about

  function makeLine(id) {
    var el = document.createElement("p");
    el.className = "line";
    el.setAttribute("data-id", String(id));
    var c = document.createElement("span");
    c.className = "c";
    var t = document.createElement("span");
    t.className = "t";
    el.appendChild(c);
    el.appendChild(t);
    return el;
  }

  function insertSorted(el, id) {
    // utterance order; a late one goes before the first younger one
    for (var kid = feed.lastElementChild; kid; kid = kid.previousElementSibling) {
      if (kid.classList.contains("line") && Number(kid.getAttribute("data-id")) < id) {
        feed.insertBefore(el, kid.nextSibling);
        return;
      }
    }
    feed.insertBefore(el, feed.firstElementChild && feed.firstElementChild.id === "empty" ?
      feed.firstElementChild.nextSibling : feed.firstElementChild);
  }

  // Draw one utterance in the chosen language: create, rewrite or remove its line.
  function draw(rec) {
    var v = client.textIn(rec, choice.lang || "source");
    var el = lines.get(rec.id);
    if (!v || !v.text.trim()) {
      // Nothing in this language (yet): a translation follows its final. The line it had stays.
      return;
    }
    if (!el) {
      el = makeLine(rec.id);
      lines.set(rec.id, el);
      insertSorted(el, rec.id);
    }
    var kind = v.kind === "final" ? "final" : "partial";
    if (el.getAttribute("data-kind") !== kind) {
      el.setAttribute("data-kind", kind);
      el.className = "line " + kind;
    }
    if (v.lang && el.lang !== v.lang) el.lang = v.lang;
    var committed = kind === "final" ? v.text :
      (typeof v.committed === "string" && v.text.indexOf(v.committed) === 0 ? v.committed : "");
    var tail = v.text.slice(committed.length);
    if (el.firstChild.textContent !== committed) el.firstChild.textContent = committed;  // text, never HTML
    if (el.lastChild.textContent !== tail) el.lastChild.textContent = tail;
  }

  function removeLine(id) {
    var el = lines.get(id);
    if (el) { el.remove(); lines.delete(id); }
  }

  function redraw() {
    lines.forEach(function (el) { el.remove(); });
    lines.clear();
    captions.forEach(draw);
    afterChange(true);
  }

  function clearFeed() {
    captions.clear();
    lines.forEach(function (el) { el.remove(); });
    lines.clear();
    newest = null;
    afterChange(false);
  }

  function emptyText() {
    if (!choice.lang || choice.lang === "source" || !captions.byId.size) return "Waiting for the first words…";
    return "Waiting for captions in " + label(choice.lang) + "…";
  }

  // "…" under the feed while the newest utterance has nothing to read in this language yet:
  // speech in progress, or a final whose translation is still coming.
  function showTyping() {
    var show = false;
    if (newest && captions.has(newest.id) && performance.now() - newest.at < TYPING_MS) {
      var v = client.textIn(newest.rec, choice.lang || "source");
      show = !(v && v.text.trim());
    }
    if ($("typing").hidden === show) $("typing").hidden = !show;
  }

  function afterChange(keepPlace) {
    var empty = $("empty");
    empty.hidden = lines.size > 0;
    if (!empty.hidden && empty.textContent !== emptyText()) empty.textContent = emptyText();
    showTyping();
    if (following || !keepPlace) toEnd();
  }

  // ---- following the newest line ----------------------------------------------------------------------
  function scroller() { return document.scrollingElement || document.documentElement; }
  function atEnd() {
    var s = scroller();
    return s.scrollTop + window.innerHeight >= s.scrollHeight - FOLLOW_SLACK_PX;
  }
  function toEnd() {
    var s = scroller();
    s.scrollTop = s.scrollHeight;
    following = true;
    $("to-live").hidden = true;
  }
  window.addEventListener("scroll", function () {
    following = atEnd();
    $("to-live").hidden = following;
  }, { passive: true });
  window.addEventListener("resize", function () { if (following) toEnd(); });
  $("to-live").addEventListener("click", toEnd);

  // ---- protocol events ----------------------------------------------------------------------------------
  function onCaption(m) {
    var r = captions.caption(m);
    if (!r) return;
    if (r.retracted) removeLine(r.id);  // it was noise
    else {
      draw(r.rec);
      addLanguages(client.languagesOf(r.rec));
      if (!newest || r.id >= newest.id) newest = { id: r.id, rec: r.rec, at: performance.now() };
    }
    r.dropped.forEach(removeLine);
    afterChange(true);
  }

  function onTranslation(m) {
    var rec = captions.translation(m);
    if (!rec) return;  // an utterance cleared (or never seen)
    addLanguages([m.lang]);
    if (client.sameLanguage(m.lang, choice.lang || "")) {
      if (m.text.trim()) draw(rec);
      else removeLine(rec.id);
    }
    afterChange(true);
  }

  function onWelcome(m, info) {
    if (info.reset) clearFeed();  // a new session (ids start again), or the server said so
    var v = viewer.state;
    if (v.sourceLanguage) addLanguages([v.sourceLanguage]);  // the spoken language first
    addLanguages(v.languages);
    if (!choice.lang) pick(defaultLanguage(), false);
    showPaused(v.paused);
  }

  function showPaused(p) { showBadge("paused", p); }
  function showBadge(id, on) {
    if ($(id).hidden === !on) return;
    $(id).hidden = !on;
  }

  var viewer = new client.Viewer({
    label: "subtitler live",
    // ?server=ws://a/rooms/hall,ws://b/rooms/hall: edges to move between (default: this page's own)
    url: client.serverUrls(params.get("server"), "view"),
    langs: function () { return ["*"]; },
    welcome: onWelcome,
    event: function (m) {
      if (m.type === "caption") onCaption(m);
      else if (m.type === "translation") onTranslation(m);
      else if (m.type === "clear") clearFeed();
      else if (m.type === "status") {
        showPaused(!!m.paused);
        showBadge("offline", !!m.offline);  // an edge's room whose host stopped publishing
      }
    },
    conn: function (c, state) {
      body.setAttribute("data-conn", c);
      $("conn").querySelector(".label").textContent =
        c === "live" ? "live" : (state.connects ? "reconnecting…" : "connecting…");
    },
  });
  setInterval(showTyping, 1000);

  // ---- the room's title -----------------------------------------------------------------------------------
  function showTitle(title) {
    var t = title || (room ? room : "Live captions");
    $("title").textContent = t;
    document.title = t + " · live captions";
  }
  showTitle("");
  fetch("/api/venue", { cache: "no-store" }).then(function (r) {
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }).then(function (venue) {
    var rooms = venue && Array.isArray(venue.rooms) ? venue.rooms : [];
    // at the root: the default room, which is the only one when there is only one
    var mine = rooms.filter(function (x) { return x && (room ? x.name === room : rooms.length === 1); })[0];
    if (mine) showTitle(typeof mine.title === "string" && mine.title.trim() ? mine.title : mine.name);
  }).catch(function () { /* an older server: the room's name will do */ });

  window.subtitlerLive = { state: viewer.state, choice: choice, languages: languages, pick: pick };

  applySize();
  applyTheme();
  fillPicker();
  viewer.start();
})();
