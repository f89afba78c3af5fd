/* subtitler overlay: the viewer side of protocol v1 (docs/protocol.md), no dependencies.
 *
 * One WebSocket to /ws/view. Captions are keyed by utterance id: a partial creates or
 * rewrites the line of its utterance, the final replaces it in place, an empty final
 * removes it. Every language is a block of exactly `lines` lines; content sits at the
 * block's bottom and grows upward, and each change of its height is animated (FLIP), so
 * lines roll up smoothly. The connection resumes from the last `seq` after any failure,
 * with exponential back-off and jitter; 5 s without a message (the server sends `status`
 * every second) counts as a dead connection.
 *
 * Caption text only ever reaches the page through textContent.
 */
(function () {
  "use strict";

  var HEARTBEAT_TIMEOUT_MS = 5000;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var STALE_PARTIAL_S = 20;      // a partial not updated this long fades (at least; see fade)
  var FADE_MS = 900;             // matches --fade-ms in overlay.css
  var SWEEP_MS = 250;
  var GENERIC_FONTS = ["serif", "sans-serif", "monospace", "cursive", "fantasy", "system-ui",
                       "ui-sans-serif", "ui-serif", "ui-monospace", "ui-rounded"];

  // ---- options from the URL --------------------------------------------------------------
  var params = new URLSearchParams(location.search);

  function num(name, def, min, max, integer) {
    var raw = params.get(name);
    if (raw === null || raw.trim() === "") return def;
    var v = Number(raw.trim().replace(/px$|s$/i, ""));
    if (!isFinite(v)) return def;
    v = Math.min(max, Math.max(min, v));
    return integer ? Math.round(v) : v;
  }

  function choice(name, allowed, def) {
    var raw = (params.get(name) || "").trim().toLowerCase();
    return allowed.indexOf(raw) >= 0 ? raw : def;
  }

  function cssColour(raw) {
    if (!raw) return null;
    var v = raw.trim();
    if (/^[0-9a-f]+$/i.test(v) && [3, 4, 6, 8].indexOf(v.length) >= 0) v = "#" + v;  // bg=202020
    return window.CSS && CSS.supports("color", v) ? v : null;
  }

  function langList(raw) {
    var out = [];
    (raw || "").split(",").forEach(function (part) {
      var p = part.trim();
      if (/^(\*|source)$/i.test(p)) p = p.toLowerCase();
      else if (!/^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$/.test(p)) return;
      if (out.indexOf(p) < 0) out.push(p);
    });
    return out.length ? out.slice(0, 6) : ["source"];
  }

  function fontList(raw) {
    var names = (raw || "").split(",").map(function (f) {
      return f.replace(/["'\\;{}<>]/g, "").trim();
    }).filter(function (f) { return f.length > 0 && f.length < 80; });
    return names.map(function (f) {
      return GENERIC_FONTS.indexOf(f.toLowerCase()) >= 0 ? f.toLowerCase() : '"' + f + '"';
    }).join(", ");
  }

  function serverUrl(raw) {
    if (raw) {
      try {
        var u = new URL(raw, location.href);
        if (u.protocol === "http:") u.protocol = "ws:";
        if (u.protocol === "https:") u.protocol = "wss:";
        if (u.protocol === "ws:" || u.protocol === "wss:") {
          if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws/view";
          return u.href;
        }
      } catch (e) { /* fall through to the default */ }
    }
    if (location.protocol === "http:" || location.protocol === "https:") {
      return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/view";
    }
    return "ws://127.0.0.1:8765/ws/view";  // opened as a file, e.g. an OBS local-file source
  }

  var bgRaw = (params.get("bg") || "transparent").trim();
  var bg = /^(transparent|none|)$/i.test(bgRaw) ? "transparent" : (cssColour(bgRaw) || "transparent");
  var opts = {
    langs: langList(params.get("lang")),
    lines: num("lines", 2, 1, 3, true),
    size: num("size", 48, 10, 300, false),
    bg: bg,
    color: cssColour(params.get("color")),
    pos: choice("pos", ["bottom", "top"], "bottom"),
    align: choice("align", ["left", "center", "centre"], "left").replace("centre", "center"),
    fade: num("fade", 12, 0, 86400, false),
    font: fontList(params.get("font")),
    server: serverUrl(params.get("server")),
  };

  // ---- look --------------------------------------------------------------------------------
  function rgb(colour) {
    // Any CSS colour → [r, g, b] through the canvas, which normalises what it accepts.
    var ctx = document.createElement("canvas").getContext("2d");
    ctx.fillStyle = "#010203";
    ctx.fillStyle = colour;
    var s = String(ctx.fillStyle), m;
    if ((m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(s))) {
      return [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)];
    }
    if ((m = /rgba?\(\s*([\d.]+)[ ,]+([\d.]+)[ ,]+([\d.]+)/.exec(s))) return [+m[1], +m[2], +m[3]];
    return null;
  }

  function mix(a, b, t) {
    return "rgb(" + [0, 1, 2].map(function (i) { return Math.round(a[i] + (b[i] - a[i]) * t); }).join(", ") + ")";
  }

  function luminance(c) {
    return (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) / 255;
  }

  var transparent = opts.bg === "transparent";
  var bgRgb = transparent ? [0, 0, 0] : (rgb(opts.bg) || [0, 0, 0]);
  var fg = opts.color || (!transparent && luminance(bgRgb) > 0.55 ? "#111111" : "#ffffff");
  var fgRgb = rgb(fg) || [255, 255, 255];
  // Partial text leans toward the background: lighter in weight of colour, never in metrics.
  var toward = transparent ? (luminance(fgRgb) > 0.5 ? [0, 0, 0] : [255, 255, 255]) : bgRgb;
  var line = Math.round(opts.size * 1.4);
  var rs = document.documentElement.style;
  rs.setProperty("--size", opts.size + "px");
  rs.setProperty("--line", line + "px");
  rs.setProperty("--lines", String(opts.lines));
  rs.setProperty("--pad-top", Math.round(line * 0.04) + "px");
  rs.setProperty("--pad-bottom", Math.round(line * 0.22) + "px");
  rs.setProperty("--bg", opts.bg);
  rs.setProperty("--fg", fg);
  rs.setProperty("--partial", mix(fgRgb, toward, 0.2));
  rs.setProperty("--tentative", mix(fgRgb, toward, 0.38));
  rs.setProperty("--outline", luminance(fgRgb) > 0.5 ? "#000000" : "#ffffff");
  if (opts.font) {
    rs.setProperty("--font-user", opts.font);
    rs.setProperty("--font", opts.font + ", " + getComputedStyle(document.documentElement).getPropertyValue("--font"));
  }
  var body = document.body;
  body.classList.toggle("transparent", transparent);
  body.classList.toggle("pos-top", opts.pos === "top");
  body.classList.toggle("pos-bottom", opts.pos !== "top");
  body.classList.toggle("align-center", opts.align === "center");

  var reduceMotion = window.matchMedia && matchMedia("(prefers-reduced-motion: reduce)").matches;
  var container = document.getElementById("captions");
  var connMark = document.getElementById("conn");
  var connLabel = connMark.querySelector(".label");

  // ---- state, visible to tests and to anyone debugging a room screen -------------------------
  var state = {
    seq: 0,             // last seq processed: sent as `since` on reconnect
    session: null,
    conn: "connecting", // connecting | live | reconnecting
    connects: 0,        // welcomes received
    attempt: 0,         // failed attempts since the last welcome (back-off exponent)
    nextRetryMs: 0,
    languages: [],
    paused: false,
  };
  window.subtitlerOverlay = { options: opts, state: state };

  // ---- blocks: one per language ------------------------------------------------------------
  // mode "source": what was spoken; "lang": a code, the caption itself when spoken in it, else
  // its translation; "translation": a code added by lang=*, translations only.
  var blocks = [];
  var starMode = opts.langs.indexOf("*") >= 0;

  function addBlock(key, mode, index) {
    var el = document.createElement("section");
    el.className = "block";
    el.setAttribute("data-lang", key);
    if (mode !== "source") el.lang = key;
    var roll = document.createElement("div");
    roll.className = "roll";
    el.appendChild(roll);
    var block = { key: key, mode: mode, el: el, roll: roll, caps: new Map() };
    if (index === undefined || index >= blocks.length) {
      container.appendChild(el);
      blocks.push(block);
    } else {
      container.insertBefore(el, blocks[index].el);
      blocks.splice(index, 0, block);
    }
    return block;
  }

  opts.langs.forEach(function (key) {
    if (key === "*") { if (!findBlock("source")) addBlock("source", "source"); }
    else if (!findBlock(key)) addBlock(key, key === "source" ? "source" : "lang");
  });

  function findBlock(key) {
    for (var i = 0; i < blocks.length; i++) if (blocks[i].key === key) return blocks[i];
    return null;
  }

  function starBlock(lang) {
    // lang=*: a translation language seen for the first time gets its block, placed in the
    // order of the welcome's language list.
    if (!starMode || findBlock(lang) || !/^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$/.test(lang)) return;
    var order = state.languages.indexOf(lang);
    var at = blocks.length;
    if (order >= 0) {
      for (var i = 0; i < blocks.length; i++) {
        var o = state.languages.indexOf(blocks[i].key);
        if (blocks[i].mode === "translation" && (o < 0 || o > order)) { at = i; break; }
      }
    }
    addBlock(lang, "translation", at);
  }

  function view(block, m) {
    if (block.mode === "source" || (block.mode === "lang" && sameLang(m.lang, block.key))) {
      return { text: m.text, committed: m.committed, lang: m.lang };
    }
    var t = m.translations && m.translations[block.key];
    return typeof t === "string" ? { text: t, committed: t, lang: block.key } : null;
  }

  function sameLang(a, b) {
    return typeof a === "string" && a.toLowerCase().replace("_", "-") === b.toLowerCase().replace("_", "-");
  }

  // ---- rendering ---------------------------------------------------------------------------
  function translateY(el) {
    var t = getComputedStyle(el).transform;
    if (!t || t === "none") return 0;
    var m = /matrix\(([^)]+)\)/.exec(t);
    return m ? parseFloat(m[1].split(",")[5]) || 0 : 0;
  }

  // Change a block's content so that the lines already on screen glide to their new place:
  // measure, change, push the content back where it was, then let the transition take it home.
  function mutate(block, animate, change) {
    var roll = block.roll;
    if (!animate || reduceMotion) { change(); return; }
    var before = roll.offsetHeight;
    change();
    var delta = roll.offsetHeight - before;
    if (!delta) return;
    var limit = (opts.lines + 1) * line;
    var from = Math.max(-limit, Math.min(limit, translateY(roll) + delta));
    roll.style.transition = "none";
    roll.style.transform = "translateY(" + from + "px)";
    void roll.offsetHeight;  // commit the start position
    roll.style.transition = "transform var(--roll-ms) cubic-bezier(0.25, 0.8, 0.3, 1)";
    roll.style.transform = "translateY(0px)";
  }

  function makeCap(id) {
    var el = document.createElement("p");
    el.className = "cap";
    el.setAttribute("data-id", String(id));
    var c = document.createElement("span");
    c.className = "c";
    var t = document.createElement("span");
    t.className = "t";
    el.appendChild(c);
    el.appendChild(t);
    return el;
  }

  function insertSorted(block, el, id) {
    var kids = block.roll.children;
    for (var i = kids.length - 1; i >= 0; i--) {
      if (Number(kids[i].getAttribute("data-id")) < id) {
        block.roll.insertBefore(el, kids[i].nextSibling);
        return;
      }
    }
    block.roll.insertBefore(el, block.roll.firstChild);
  }

  function render(block, id, kind, v, animate) {
    var el = block.caps.get(id);
    var text = String(v.text);
    var committed = typeof v.committed === "string" && text.indexOf(v.committed) === 0 ? v.committed : "";
    if (kind === "final") committed = text;
    mutate(block, animate, function () {
      if (!el) {
        el = makeCap(id);
        block.caps.set(id, el);
        insertSorted(block, el, id);
      }
      if (typeof v.lang === "string" && v.lang && el.lang !== v.lang) el.lang = v.lang;
      var cls = "cap " + kind;
      if (el.className !== cls) el.className = cls;
      el.setAttribute("data-kind", kind);
      var c = el.firstChild, t = el.lastChild;
      if (c.textContent !== committed) c.textContent = committed;  // text, never HTML
      var tail = text.slice(committed.length);
      if (t.textContent !== tail) t.textContent = tail;
    });
    el._kind = kind;
    el._updated = performance.now();
    el._goneAt = 0;
  }

  function remove(block, id, animate) {
    var el = block.caps.get(id);
    if (!el) return;
    block.caps.delete(id);
    // Only a change at the bottom moves the lines above it; removing an older line does not.
    mutate(block, animate && el === block.roll.lastElementChild, function () { el.remove(); });
  }

  function clearAll(quick) {
    known.clear();
    blocks.forEach(function (block) {
      if (!quick) {
        block.caps.forEach(function (el) { el.remove(); });
        block.caps.clear();
        block.roll.style.transform = "";
        return;
      }
      var now = performance.now();
      block.caps.forEach(function (el) {
        el.classList.add("gone");
        el._goneAt = now - FADE_MS + 350;
      });
    });
  }

  function sweep() {
    var now = performance.now();
    blocks.forEach(function (block) {
      block.caps.forEach(function (el, id) {
        if (el._goneAt) {
          if (now - el._goneAt > FADE_MS + 50) remove(block, id, true);
          return;
        }
        var limit = el._kind === "final" ? opts.fade
          : (opts.fade > 0 ? Math.max(opts.fade, STALE_PARTIAL_S) : 60);
        if (limit > 0 && now - el._updated > limit * 1000) {
          el.classList.add("gone");
          el._goneAt = now;
        }
      });
      // Lines rolled out of the window are gone for good: keep the page small on long sessions.
      var roll = block.roll;
      var hidden = roll.offsetHeight - opts.lines * line - line;  // one spare line for the mask
      var out = [];
      for (var el = roll.firstElementChild; el && hidden > 0; el = el.nextElementSibling) {
        if (el.offsetTop + el.offsetHeight > hidden) break;
        out.push(el);  // measured before any removal: removing shifts the offsets of the rest
      }
      out.forEach(function (el) {
        block.caps.delete(Number(el.getAttribute("data-id")));
        el.remove();
      });
    });
  }
  setInterval(sweep, SWEEP_MS);

  // ---- protocol events ---------------------------------------------------------------------
  // Utterances received since the last clear: a translation for any other id is ignored, so a
  // late translation cannot bring back a caption the console cleared.
  var known = new Set();

  function onCaption(m) {
    if (typeof m.id !== "number") return;
    var kind = m.kind === "final" ? "final" : "partial";
    var text = typeof m.text === "string" ? m.text : "";
    var animate = !m.history;
    if (kind === "final" && !text.trim()) known.delete(m.id);
    else known.add(m.id);
    if (known.size > 1000) known.delete(known.values().next().value);
    if (starMode && m.translations) Object.keys(m.translations).forEach(starBlock);
    blocks.forEach(function (block) {
      if (kind === "final" && !text.trim()) { remove(block, m.id, animate); return; }  // retracted
      var v = view(block, m);
      if (v && v.text.trim()) render(block, m.id, kind, v, animate);
      // else: a translation that is not there yet keeps the line it had (if any) until the
      // `translation` event for this id arrives.
    });
  }

  function onTranslation(m) {
    if (typeof m.id !== "number" || typeof m.lang !== "string" || typeof m.text !== "string") return;
    if (!known.has(m.id)) return;
    starBlock(m.lang);
    blocks.forEach(function (block) {
      if (block.mode === "source" || !sameLang(m.lang, block.key)) return;
      if (m.text.trim()) render(block, m.id, "final", { text: m.text, lang: m.lang }, !m.history);
      else remove(block, m.id, !m.history);
    });
  }

  var ws = null;
  var sentSince = 0;
  var retryTimer = 0;
  var watchdog = 0;

  function onWelcome(m) {
    var otherSession = state.session !== null && m.session !== state.session;
    state.languages = Array.isArray(m.languages) ? m.languages.filter(function (l) { return typeof l === "string"; }) : [];
    state.paused = !!m.paused;
    if (m.protocol !== 1) console.warn("subtitler overlay: server speaks protocol", m.protocol, "(expected 1)");
    if (m.reset || otherSession) {
      clearAll(!m.reset);
      state.seq = 0;
    }
    state.session = m.session === undefined ? null : m.session;
    if (otherSession && !m.reset && sentSince > 0) {
      // A restarted server (a new session) has its own seq counter and did not know our
      // `since`: ask again from the start of its history.
      sentSince = 0;
      reconnectNow();
      return false;
    }
    state.connects += 1;
    state.attempt = 0;
    setConn("live");
    return true;
  }

  function onMessage(data) {
    var m;
    try { m = JSON.parse(data); } catch (e) { return; }
    if (!m || typeof m !== "object") return;
    if (m.type === "welcome") { onWelcome(m); return; }
    if (typeof m.seq === "number") {
      if (m.seq <= state.seq) return;  // seen before (a replay overlapping what we had)
      state.seq = m.seq;
    }
    switch (m.type) {
      case "caption": onCaption(m); break;
      case "translation": onTranslation(m); break;
      case "clear": clearAll(true); break;
      case "status": state.paused = !!m.paused; break;  // also the heartbeat
      case "error": console.warn("subtitler overlay: server error", m.code, m.message); break;
      default: break;
    }
  }

  // ---- connection --------------------------------------------------------------------------
  function setConn(c) {
    state.conn = c;
    body.setAttribute("data-conn", c);
    body.classList.toggle("conn-down", c !== "live");
    connLabel.textContent = c === "live" ? "" : (state.connects ? "reconnecting" : "connecting");
  }

  function armWatchdog() {
    clearTimeout(watchdog);
    watchdog = setTimeout(function () {
      console.warn("subtitler overlay: no message for " + HEARTBEAT_TIMEOUT_MS / 1000 + " s; reconnecting");
      lost(4000, "heartbeat timeout");
    }, HEARTBEAT_TIMEOUT_MS);
  }

  function drop(code, reason) {
    var s = ws;
    ws = null;
    clearTimeout(watchdog);
    if (s) {
      s.onopen = s.onmessage = s.onclose = s.onerror = null;
      try { s.close(code, reason); } catch (e) { /* already closing */ }
    }
  }

  function lost(code, reason) {
    drop(code, reason);
    setConn("reconnecting");
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, state.attempt));
    state.attempt += 1;
    // Jitter, so that every screen in the building does not knock at the same instant.
    var delay = Math.max(BACKOFF_MIN_MS, Math.min(BACKOFF_MAX_MS, base * (0.8 + 0.4 * Math.random())));
    state.nextRetryMs = Math.round(delay);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    drop(1000, "resync");
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, 0);
  }

  function connect() {
    clearTimeout(retryTimer);
    var s;
    try {
      s = new WebSocket(opts.server);
    } catch (e) {
      console.warn("subtitler overlay: bad server URL", opts.server, e);
      lost(1000, "");
      return;
    }
    ws = s;
    armWatchdog();  // a connect that hangs counts as dead too
    s.onopen = function () {
      sentSince = state.seq;
      var hello = { type: "hello", langs: opts.langs, since: state.seq };
      // With the session it came from, `since` cannot be mistaken for a number of another
      // session (a restarted server counts from 1 again): the server answers reset instead.
      if (state.session) hello.session = state.session;
      s.send(JSON.stringify(hello));
      armWatchdog();
    };
    s.onmessage = function (ev) {
      armWatchdog();
      if (typeof ev.data === "string") onMessage(ev.data);
    };
    s.onclose = function (ev) { lost(1000, "closed " + ev.code); };
    s.onerror = function () { /* onclose follows */ };
  }

  setConn("connecting");
  connect();
})();
