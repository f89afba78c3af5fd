/* subtitler overlay: the viewer side of protocol v1 (docs/protocol.md), no dependencies but
 * client.js.
 *
 * One WebSocket to this page's room: /rooms/NAME/ws/view under /rooms/NAME/, /ws/view at the
 * root. Captions are keyed by utterance id: a partial creates or rewrites the line of its
 * utterance, the final replaces it in place, an empty final removes it. Every language is a
 * block of exactly `lines` lines; content sits at the block's bottom and grows upward, and each
 * change of its height is animated (FLIP), so lines roll up smoothly. The connection resumes
 * from the last `seq` after any failure, with exponential back-off and jitter; 5 s without a
 * message (the server sends a `status` in every second without other news) counts as a dead connection. The
 * connection, resuming and the captions by id are client.js's (shared with the other pages);
 * this file draws.
 *
 * Caption text only ever reaches the page through textContent.
 */
(function () {
  "use strict";

  var client = window.subtitlerClient;
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
      else if (!client.isLanguageCode(p)) return;
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
    servers: client.serverUrls(params.get("server"), "view"),  // server=ws://a,ws://b: a host and its edges
  };
  opts.server = opts.servers[0];  // the first (what the page shows it talks to)

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

  // ---- the stream; its state is visible to tests and to anyone debugging a room screen ----------
  var viewer = new client.Viewer({
    label: "subtitler overlay",
    url: opts.servers,
    langs: function () { return opts.langs; },
    welcome: onWelcome,
    event: onEvent,
    conn: setConn,
  });
  var state = viewer.state;  // seq, session, conn, connects, attempt, nextRetryMs, languages, paused
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
    if (!starMode || findBlock(lang) || !client.isLanguageCode(lang)) return;
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

  // What a block shows of an utterance: see client.textIn (null: nothing, or not yet).
  function view(block, rec) {
    return client.textIn(rec, block.mode === "source" ? "source" : block.key, block.mode === "translation");
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
    var committed = kind === "final" ? text :
      (typeof v.committed === "string" && text.indexOf(v.committed) === 0 ? v.committed : "");
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
    captions.clear();
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
  var captions = new client.Captions(1000);

  function onCaption(m) {
    var r = captions.caption(m);
    if (!r) return;
    var animate = !m.history;
    if (starMode && !r.retracted) Object.keys(r.rec.translations).forEach(starBlock);
    blocks.forEach(function (block) {
      if (r.retracted) { remove(block, r.id, animate); return; }  // it was noise
      var v = view(block, r.rec);
      if (v && v.text.trim()) render(block, r.id, r.rec.kind, v, animate);
      // else: a translation that is not there yet keeps the line it had (if any) until the
      // `translation` event for this id arrives.
    });
  }

  function onTranslation(m) {
    if (!captions.translation(m)) return;
    starBlock(m.lang);
    blocks.forEach(function (block) {
      if (block.mode === "source" || !client.sameLanguage(m.lang, block.key)) return;
      if (m.text.trim()) render(block, m.id, "final", { text: m.text, lang: m.lang }, !m.history);
      else remove(block, m.id, !m.history);
    });
  }

  function onWelcome(m, info) {
    if (info.reset) clearAll(!info.hard);  // another session: fade what was there; reset: at once
  }

  function onEvent(m) {
    switch (m.type) {
      case "caption": onCaption(m); break;
      case "translation": onTranslation(m); break;
      case "clear": clearAll(true); break;
      default: break;  // status (the heartbeat; the viewer keeps `paused`), error (logged)
    }
  }

  // ---- connection mark ---------------------------------------------------------------------
  function setConn(c) {
    body.setAttribute("data-conn", c);
    body.classList.toggle("conn-down", c !== "live");
    connLabel.textContent = c === "live" ? "" : (state && state.connects ? "reconnecting" : "connecting");
  }

  viewer.start();
})();
