/* subtitler venue page (web/index.html): every room of this server, no dependencies but client.js.
 *
 * GET /api/venue every 2 s: each room with its state (live, paused, idle, lagging; offline on an edge), languages,
 * links to its screens (overlay.html?lang=…) and phones (live.html?lang=…) per language, its
 * console, and a QR code of its audience page per language (qr.svg?lang=…). Cards are updated
 * in place, so QR images and the operator's buttons stay put between polls.
 *
 * /#token=T (the venue token, kept in localStorage) adds the operator's controls: open and close
 * rooms through /ws/venue, whose pushes also refresh the list. /?poster=NAME shows one room's QR
 * codes large, for a screen in the hall.
 *
 * Every text from the server reaches the page through textContent.
 */
(function () {
  "use strict";

  var client = window.subtitlerClient;
  var POLL_MS = 2000;
  var TOKEN_KEY = "subtitler.venue-token";
  var CONFIRM_MS = 4000;

  var $ = function (id) { return document.getElementById(id); };
  var params = new URLSearchParams(location.search);
  var posterRoom = params.get("poster");

  var state = {
    venue: null,       // the last /api/venue (or /ws/venue push)
    polled: 0,         // successful polls
    operator: "off",   // off | connecting | live | refused
    canOpen: false,
    pending: [],       // commands sent, oldest first
  };
  window.subtitlerVenue = { state: state };

  function text(el, s) { if (el.textContent !== s) el.textContent = s; }

  function el(tag, cls, content) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined) e.textContent = content;
    return e;
  }

  var englishNames = null;
  try { englishNames = new Intl.DisplayNames(["en"], { type: "language" }); } catch (e) { /* old browser */ }
  function englishName(code) {
    try { return (englishNames && englishNames.of(String(code).replace(/_/g, "-"))) || code; } catch (e) { return code; }
  }

  // A room's page as the server names it (a path on this server), else the contract's own.
  function roomUrl(room, page) {
    var u = room.urls && room.urls[page];
    if (typeof u === "string" && /^\/[^/\\]/.test(u)) return u;
    return "/rooms/" + room.name + "/" + (page === "qr" ? "qr.svg" : page + ".html");
  }

  function withLang(url, code) {
    return code ? url + "?lang=" + encodeURIComponent(code) : url;
  }

  function roomLanguages(room) {
    var out = [];
    (Array.isArray(room.languages) ? room.languages : []).forEach(function (l) {
      if (client.isLanguageCode(l) && !out.some(function (o) { return client.sameLanguage(o, l); })) out.push(l);
    });
    return out;
  }

  function link(href, label, cls) {
    var a = el("a", cls, label);
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener";
    return a;
  }

  // ---- one room --------------------------------------------------------------------------------------
  var cards = new Map();  // room name → {el, parts…, langsKey}

  function qrFigure(room, code, size) {
    var fig = el("figure", "qr");
    var a = link(withLang(roomUrl(room, "live"), code));
    var img = document.createElement("img");
    img.src = withLang(roomUrl(room, "qr"), code);
    img.width = img.height = size;
    img.alt = "QR code: " + (room.title || room.name) + " captions" + (code ? " in " + englishName(code) : "");
    img.setAttribute("data-lang", code || "source");
    a.appendChild(img);
    var cap = el("figcaption");
    var name = el("span", "name", code ? client.autonym(code) : "As spoken");
    if (code) name.lang = code;
    cap.appendChild(name);
    if (code) cap.appendChild(el("code", "", code));
    a.appendChild(cap);
    fig.appendChild(a);
    return fig;
  }

  function makeCard(room) {
    var c = { el: el("article", "room"), langsKey: null };
    c.el.setAttribute("data-room", room.name);
    var head = el("header", "room-head");
    var titles = el("div", "titles");
    c.title = el("h2");
    c.name = el("code", "name");
    titles.appendChild(c.title);
    titles.appendChild(c.name);
    c.state = el("span", "state");
    c.facts = el("span", "facts");
    c.close = el("button", "danger small", "Close room");
    c.close.type = "button";
    c.close.hidden = true;
    c.close.addEventListener("click", function () { askClose(room.name, c.close); });
    head.appendChild(titles);
    head.appendChild(c.state);
    head.appendChild(c.facts);
    head.appendChild(el("span", "spacer"));
    head.appendChild(c.close);
    c.el.appendChild(head);

    var body = el("div", "room-body");
    c.table = el("table", "langs");
    var thead = el("thead");
    var tr = el("tr");
    ["Language", "Screens", "Phones"].forEach(function (h) { tr.appendChild(el("th", "", h)); });
    thead.appendChild(tr);
    c.table.appendChild(thead);
    c.rows = el("tbody");
    c.table.appendChild(c.rows);
    var left = el("div", "room-links");
    left.appendChild(c.table);
    c.more = el("p", "more");
    left.appendChild(c.more);
    body.appendChild(left);

    var right = el("div", "room-qr");
    right.appendChild(el("p", "qr-lead", "Scan for captions in your language"));
    c.qrs = el("div", "qrs");
    right.appendChild(c.qrs);
    body.appendChild(right);
    c.el.appendChild(body);
    return c;
  }

  function updateCard(c, room) {
    var title = typeof room.title === "string" && room.title.trim() ? room.title : room.name;
    text(c.title, title);
    text(c.name, room.name);
    var st = ["live", "paused", "idle", "lagging", "offline"].indexOf(room.state) >= 0 ? room.state : "idle";
    c.el.setAttribute("data-state", st);
    c.state.setAttribute("data-state", st);
    var lag = typeof room.lag === "number" && isFinite(room.lag) ? room.lag : null;
    text(c.state, st === "lagging" && lag !== null ? "lagging " + lag.toFixed(1) + " s" : st);
    c.state.title = {
      live: "audio heard in the last seconds", paused: "paused from its console",
      idle: "no audio lately", lagging: "decoding falls behind the audio",
      offline: "its host has stopped publishing (this is an edge); the room closes here if it does not come back",
    }[st];
    var viewers = typeof room.viewers === "number" ? room.viewers : 0;
    var source = typeof room.source_language === "string" ? room.source_language : "";
    text(c.facts, viewers + (viewers === 1 ? " screen" : " screens") +
      (source === "auto" ? " · language detected" : ""));
    c.close.hidden = !(state.operator === "live" && state.canOpen);

    var langs = roomLanguages(room);
    var key = JSON.stringify([langs, roomUrl(room, "overlay"), roomUrl(room, "live"), roomUrl(room, "qr"),
                              roomUrl(room, "console"), operatorToken()]);
    if (key === c.langsKey) return;
    c.langsKey = key;

    c.rows.textContent = "";
    var sourceLang = client.isLanguageCode(source) ? source : null;
    [""].concat(langs).forEach(function (code) {
      var tr = el("tr");
      tr.setAttribute("data-lang", code || "source");
      var name = el("td", "lang");
      if (code) {
        name.appendChild(el("span", "", englishName(code)));
        name.appendChild(el("code", "", code));
        if (sourceLang && client.sameLanguage(code, sourceLang)) name.appendChild(el("span", "tag", "spoken"));
      } else {
        name.appendChild(el("span", "muted", "as spoken"));
      }
      tr.appendChild(name);
      var screens = el("td");
      screens.appendChild(link(withLang(roomUrl(room, "overlay"), code), "overlay", "overlay-link"));
      tr.appendChild(screens);
      var phones = el("td");
      phones.appendChild(link(withLang(roomUrl(room, "live"), code), "live", "live-link"));
      tr.appendChild(phones);
      c.rows.appendChild(tr);
    });

    c.more.textContent = "";
    var token = operatorToken();
    var consoleUrl = roomUrl(room, "console") + (token ? "#token=" + encodeURIComponent(token) : "");
    c.more.appendChild(link(consoleUrl, "Console", "console-link"));
    c.more.appendChild(document.createTextNode(" · "));
    c.more.appendChild(link(withLang(roomUrl(room, "overlay"), "*"), "overlay, every language"));
    c.more.appendChild(document.createTextNode(" · "));
    c.more.appendChild(link("/?poster=" + encodeURIComponent(room.name), "hall poster"));

    c.qrs.textContent = "";
    (langs.length ? langs : [""]).forEach(function (code) { c.qrs.appendChild(qrFigure(room, code, 112)); });
  }

  // ---- the venue -----------------------------------------------------------------------------------------
  function render(venue) {
    if (!venue || !Array.isArray(venue.rooms)) return;
    state.venue = venue;
    var rooms = venue.rooms.filter(function (r) { return r && typeof r.name === "string" && client.ROOM_NAME.test(r.name); });
    if (posterRoom !== null) { renderPoster(rooms); return; }

    var box = $("rooms");
    var seen = new Set();
    rooms.forEach(function (room, i) {
      seen.add(room.name);
      var c = cards.get(room.name);
      if (!c) { c = makeCard(room); cards.set(room.name, c); }
      updateCard(c, room);
      if (box.children[i] !== c.el) box.insertBefore(c.el, box.children[i] || null);
    });
    cards.forEach(function (c, name) {
      if (!seen.has(name)) { c.el.remove(); cards.delete(name); }
    });
    $("no-rooms").hidden = rooms.length > 0;

    var viewers = rooms.reduce(function (n, r) { return n + (typeof r.viewers === "number" ? r.viewers : 0); }, 0);
    text($("summary"), rooms.length + (rooms.length === 1 ? " room" : " rooms") + " · " + viewers +
      (viewers === 1 ? " screen" : " screens") + " connected");
    var cap = venue.capacity || {};
    var capEl = $("capacity");
    if (typeof cap.max_rooms === "number" || cap.overloaded) {
      capEl.hidden = false;
      text(capEl, cap.overloaded ? "overloaded: new rooms are refused" :
        "capacity " + (typeof cap.rooms === "number" ? cap.rooms : rooms.length) + " / " + cap.max_rooms);
      capEl.classList.toggle("bad", !!cap.overloaded);
    } else {
      capEl.hidden = true;
    }
    builderRooms(rooms);
  }

  function poll() {
    fetch("/api/venue", { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (venue) {
      state.polled += 1;
      $("pill-venue").setAttribute("data-state", "live");
      text($("venue-label"), "live");
      render(venue);
    }).catch(function () {
      $("pill-venue").setAttribute("data-state", "down");
      text($("venue-label"), state.polled ? "offline: retrying" : "no venue here");
    }).then(function () { setTimeout(poll, POLL_MS); });
  }

  // ---- a poster for the hall: one room's QR codes, large ----------------------------------------------------
  var posterKey = null;
  function renderPoster(rooms) {
    var room = rooms.filter(function (r) { return r.name === posterRoom; })[0];
    $("poster-missing").hidden = !!room;
    if (!room) {
      text($("poster-title"), posterRoom);
      $("poster-codes").textContent = "";
      posterKey = null;
      return;
    }
    var title = typeof room.title === "string" && room.title.trim() ? room.title : room.name;
    text($("poster-title"), title);
    document.title = title + " · captions";
    var langs = roomLanguages(room);
    var key = JSON.stringify([langs, roomUrl(room, "qr")]);
    if (key === posterKey) return;
    posterKey = key;
    var box = $("poster-codes");
    box.textContent = "";
    (langs.length ? langs : [""]).forEach(function (code) { box.appendChild(qrFigure(room, code, 260)); });
  }

  // ---- the operator -------------------------------------------------------------------------------------------
  var token = "";
  var line = null;
  function operatorToken() { return state.operator === "live" ? token : ""; }

  var messageTimer = 0;
  function say(msg, isError, keep) {
    var m = $("operator-message");
    m.textContent = "";
    if (typeof msg === "string") m.textContent = msg;
    else m.appendChild(msg);
    m.classList.toggle("error", !!isError);
    clearTimeout(messageTimer);
    if (!isError && !keep) messageTimer = setTimeout(function () { m.textContent = ""; }, 8000);
  }

  function setOperator(s) {
    state.operator = s;
    var pill = $("pill-operator");
    pill.hidden = false;
    pill.setAttribute("data-state", s === "live" ? "live" : (s === "refused" ? "down" : "connecting"));
    $("btn-signout").hidden = false;
    $("operator").hidden = !(s === "live" && state.canOpen);
    $("btn-open").disabled = s !== "live";
    if (state.venue) render(state.venue);  // close buttons and console links follow
  }

  // The token from the address (#token=…, then taken out of sight and out of history), else
  // the one kept from last time.
  function tokenFromHash() {
    var t = new URLSearchParams(location.hash.slice(1)).get("token");
    if (!t) return "";
    client.save(TOKEN_KEY, t);
    history.replaceState(null, "", location.pathname + location.search);
    return t;
  }

  function operate(t) {
    if (line) line.stop();
    line = null;
    token = t;
    state.pending = [];
    if (!token || posterRoom !== null) return;
    say("");
    line = new client.Line(client.wsUrl("venue", "/"), {
      label: "subtitler venue",
      open: function (l) { l.send({ type: "auth", token: token }); },
      message: function (m, l) {
        if (m.type === "ok" && m.command === "auth") {
          state.canOpen = typeof m.can_open_rooms === "boolean" ? m.can_open_rooms : true;
          l.healthy();
          setOperator("live");
          if (!state.canOpen) say("This server serves a fixed set of rooms (subtitler run): rooms cannot be opened or closed here.", false, true);
          return;
        }
        if (m.type === "venue") { render(m); return; }
        if (m.type === "ok") { done(m); return; }
        if (m.type === "error") {
          if (m.code === "unauthorized") {
            l.stop();
            client.save(TOKEN_KEY, "");
            setOperator("refused");
            say("The venue token was refused" + (m.message ? ": " + m.message : "."), true);
            return;
          }
          var cmd = state.pending.shift();
          say((cmd ? (cmd.type === "open_room" ? "Could not open '" : "Could not close '") + cmd.name + "': " : "") +
            (m.message || m.code || "error"), true);
          busy();
          resetCloseButtons();
        }
      },
      down: function () {
        state.pending = [];
        busy();
        if (state.operator !== "refused") setOperator("connecting");
      },
    });
    setOperator("connecting");
    line.open();
  }

  // a token pasted into the address of a page already open
  window.addEventListener("hashchange", function () {
    var t = tokenFromHash();
    if (t) operate(t);
  });

  $("btn-signout").addEventListener("click", function () {
    client.save(TOKEN_KEY, "");
    location.replace(location.pathname + location.search);
  });

  function command(obj) {
    if (!line || state.operator !== "live" || !line.send(obj)) { say("Not connected to the venue.", true); return false; }
    state.pending.push({ type: obj.type, name: obj.name });
    busy();
    return true;
  }

  function busy() {
    var opening = state.pending.some(function (p) { return p.type === "open_room"; });
    $("btn-open").disabled = state.operator !== "live" || opening;
    text($("btn-open"), opening ? "Opening…" : "Open room");
  }

  function done(m) {
    var cmd = state.pending.shift();
    var room = m.room && typeof m.room === "object" ? m.room : {};
    var name = typeof room.name === "string" ? room.name : (cmd ? cmd.name : "");
    busy();
    if (m.command === "open_room") {
      $("open-form").reset();
      var msg = el("span");
      msg.appendChild(document.createTextNode("Room '" + name + "' is open. "));
      if (client.ROOM_NAME.test(name)) {
        var tok = typeof room.token === "string" ? room.token : "";
        var consoleUrl = roomUrl(room.urls ? room : { name: name }, "console");
        msg.appendChild(link(consoleUrl + (tok ? "#token=" + encodeURIComponent(tok) : ""), "Its console"));
        if (tok) {
          msg.appendChild(document.createTextNode(" · room token "));
          msg.appendChild(el("code", "", tok));
        }
      }
      say(msg, false, true);
    } else if (m.command === "close_room") {
      say("Room '" + name + "' is closed.");
    }
  }

  function resetCloseButtons() {
    cards.forEach(function (c) {
      if (c.close.getAttribute("data-confirm") === null) c.close.textContent = "Close room";
    });
  }

  function askClose(name, button) {
    if (button.getAttribute("data-confirm") !== "1") {  // a second click within a few seconds closes it
      button.setAttribute("data-confirm", "1");
      button.textContent = "Close '" + name + "'?";
      setTimeout(function () {
        button.removeAttribute("data-confirm");
        button.textContent = "Close room";
      }, CONFIRM_MS);
      return;
    }
    button.removeAttribute("data-confirm");
    button.textContent = "Closing…";
    if (!command({ type: "close_room", name: name })) button.textContent = "Close room";
  }

  function splitCodes(raw) {
    return String(raw || "").split(/[\s,;]+/).filter(function (s) { return s.length > 0; });
  }

  $("open-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var f = ev.target.elements;
    var name = f.name.value.trim();
    var language = f.language.value.trim() || "auto";
    var targets = splitCodes(f.targets.value);
    // the server says the same; saying it here saves a round trip and names the field
    if (!client.ROOM_NAME.test(name)) {
      say("A room name is 1 to 32 lower-case letters, digits, '-' or '_', starting with a letter or digit (e.g. hall, forum-2).", true);
      f.name.focus();
      return;
    }
    if (language !== "auto" && !client.isLanguageCode(language)) {
      say("'" + language + "' is not a language code: use e.g. en, zh, es, or auto.", true);
      f.language.focus();
      return;
    }
    var bad = targets.filter(function (t) { return !client.isLanguageCode(t); });
    if (bad.length) {
      say("Not a language code: " + bad.join(", ") + ". Use codes such as zh, en, es.", true);
      f.targets.focus();
      return;
    }
    var cmd = { type: "open_room", name: name, title: f.title.value.trim(), language: language, targets: targets };
    if (f.token.value.trim()) cmd.token = f.token.value.trim();
    if (command(cmd)) say("Opening '" + name + "'…", false, true);
  });

  // ---- an overlay address with options, for one room ----------------------------------------------------------
  var builder = $("builder");
  var roomSel = $("builder-room");
  var builderKey = "";
  function builderRooms(rooms) {
    var key = rooms.map(function (r) { return r.name; }).join(",");
    if (key === builderKey) return;
    builderKey = key;
    var was = roomSel.value;
    roomSel.textContent = "";
    rooms.forEach(function (r) {
      var o = el("option", "", (r.title && r.title !== r.name ? r.title + " (" + r.name + ")" : r.name));
      o.value = r.name;
      roomSel.appendChild(o);
    });
    if (was && rooms.some(function (r) { return r.name === was; })) roomSel.value = was;
    build();
  }
  function build() {
    var q = [];
    var base = "overlay.html";
    Array.prototype.forEach.call(builder.elements, function (e) {
      var v = (e.value || "").trim();
      if (e.name === "room") {
        var room = state.venue && state.venue.rooms.filter(function (r) { return r && r.name === v; })[0];
        if (room) base = roomUrl(room, "overlay");
        return;
      }
      if (!v || (e.name === "lines" && v === "2")) return;
      q.push(e.name + "=" + encodeURIComponent(v).replace(/%2C/g, ",").replace(/%2A/g, "*"));
    });
    var url = new URL(base + (q.length ? "?" + q.join("&") : ""), location.href).href;
    $("url").value = url;
    $("open").href = url;
  }
  builder.addEventListener("input", build);
  builder.addEventListener("change", build);
  $("copy").addEventListener("click", function () {
    $("url").select();
    if (navigator.clipboard) navigator.clipboard.writeText($("url").value).catch(function () {});
    else document.execCommand("copy");
  });

  // ---- start --------------------------------------------------------------------------------------------------
  operate(tokenFromHash() || client.load(TOKEN_KEY, ""));
  if (posterRoom !== null) {
    document.body.classList.add("poster-mode");
    $("poster").hidden = false;
  }
  build();
  poll();
})();
