// idlink operator console (docs/console.md).
//
// Rules this file keeps:
// - The API key and the session live in this closure only: never a cookie,
//   localStorage, sessionStorage or the URL. Reloading the page signs out.
// - Every value from the server is put in the page with textContent or as an
//   attribute value, never parsed as HTML (no innerHTML anywhere).
// - Every change shows what it will do and waits for a confirmation.
"use strict";

(() => {
  const ROLES = { reader: 1, writer: 2, agent: 3, admin: 4 };
  const MAX_GRAPH_CONTACTS = 40;
  const JOURNEY_PAGE = 10;
  const SVG = "http://www.w3.org/2000/svg";

  // -- state: in memory only --------------------------------------------------------------
  const state = {
    account: "",
    key: "",
    session: "",
    role: "",
    keyId: "",
    expireTime: "",
    customer: null,
    searched: null,
    journeyToken: "",
  };

  const $ = (id) => document.getElementById(id);

  // el("td", {class: "x"}, "text", child): strings become text nodes, never markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) append(node, child);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) append(node, child);
    return node;
  }

  function append(node, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) child.forEach((c) => append(node, c));
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function can(role) {
    return (ROLES[state.role] || 0) >= ROLES[role];
  }

  function say(text, isError) {
    const status = $("status");
    status.textContent = text || "";
    status.className = isError ? "status error" : "status";
  }

  // -- the API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(httpStatus, body) {
      super((body && body.message) || `HTTP ${httpStatus}`);
      this.httpStatus = httpStatus;
      this.body = body || {};
      const info = (this.body.details || []).find((d) => (d["@type"] || "").endsWith("ErrorInfo"));
      this.reason = info ? info.reason : "";
    }
  }

  function accountPath(rest) {
    return `/v1/accounts/${encodeURIComponent(state.account)}${rest}`;
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${state.key}` };
    if (state.session) headers["X-Idlink-Session"] = state.session;
    const init = { method, headers, credentials: "omit", cache: "no-store", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = {};
    try {
      data = text ? JSON.parse(text) : {};
    } catch (_) {
      data = { message: text };
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      if (response.status === 401 && state.key && path !== "/v1/sessions") {
        signOut(`Signed out: ${error.message}`);
      }
      throw error;
    }
    return data;
  }

  function failed(error) {
    say(error instanceof ApiError ? `${error.message} (HTTP ${error.httpStatus})` : String(error), true);
  }

  // -- confirmation ------------------------------------------------------------------------

  function confirmChange(title, changes) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    const list = clear($("confirm-changes"));
    changes.forEach((line) => list.appendChild(el("li", {}, line)));
    return new Promise((resolve) => {
      const done = (answer) => {
        $("confirm-ok").onclick = null;
        $("confirm-cancel").onclick = null;
        dialog.close();
        resolve(answer);
      };
      $("confirm-ok").onclick = () => done(true);
      $("confirm-cancel").onclick = () => done(false);
      dialog.showModal();
    });
  }

  // -- sign in and out ---------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    $("sign-in-error").textContent = "";
    state.account = $("sign-in-account").value.trim();
    state.key = $("sign-in-key").value.trim();
    state.session = "";
    const code = $("sign-in-code").value.trim();
    try {
      const who = await api("POST", "/v1/sessions", { account: state.account, code });
      state.role = who.role;
      state.keyId = who.keyId;
      state.session = who.sessionId || "";
      state.expireTime = who.expireTime || "";
    } catch (error) {
      state.key = "";
      $("sign-in-error").textContent =
        error.reason === "TOTP_REQUIRED" ? "This key is interactive: enter its TOTP code." : error.message;
      return;
    }
    // The fields are cleared: the key is kept in memory only.
    $("sign-in-key").value = "";
    $("sign-in-code").value = "";
    $("sign-in-panel").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    const until = state.expireTime ? `, session until ${new Date(state.expireTime).toLocaleTimeString()}` : "";
    $("who-text").textContent = `${state.account} · ${state.keyId} · ${state.role}${until}`;
    document.querySelectorAll("[data-min-role]").forEach((node) => {
      node.classList.toggle("hidden-by-role", !can(node.dataset.minRole));
    });
    showTab("search");
    say("Signed in.");
  }

  async function signOut(message) {
    if (state.session) {
      try {
        await fetch("/v1/sessions:signOut", {
          method: "POST",
          credentials: "omit",
          headers: { Authorization: `Bearer ${state.key}`, "X-Idlink-Session": state.session },
        });
      } catch (_) {
        // The session ends by itself.
      }
    }
    Object.assign(state, { key: "", session: "", role: "", keyId: "", customer: null, searched: null });
    $("app").hidden = true;
    $("who").hidden = true;
    $("sign-in-panel").hidden = false;
    clear($("result"));
    $("sign-in-error").textContent = typeof message === "string" ? message : "";
  }

  function showTab(name) {
    document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
    document.querySelectorAll(".tab").forEach((t) => {
      t.hidden = t.id !== `tab-${name}`;
    });
    if (name === "why") fillContactPickers();
    if (name === "act") fillMergePickers();
  }

  // -- search and the customer ---------------------------------------------------------------

  function contactKey(type, value, source) {
    const key = { type, value };
    if (source) key.source = source;
    return key;
  }

  function describe(key) {
    return `${key.type}${key.source ? `/${key.source}` : ""} ${key.value}`;
  }

  async function search(event) {
    if (event) event.preventDefault();
    const key = contactKey($("search-type").value.trim(), $("search-value").value, $("search-source").value.trim());
    say("Searching…");
    try {
      const answer = await api("POST", accountPath("/contacts:resolve"), { contact: key });
      state.searched = { key, answer };
      await renderResolve(answer);
      say("");
    } catch (error) {
      failed(error);
    }
  }

  async function openCustomer(pid) {
    say("Opening…");
    try {
      const customer = await api("GET", accountPath(`/customers/${encodeURIComponent(pid)}`));
      state.searched = null;
      clear($("result"));
      await renderCustomer(customer, $("result"));
      say("");
    } catch (error) {
      failed(error);
    }
  }

  async function renderResolve(answer) {
    const out = clear($("result"));
    const status = (answer.status || "").replace("RESOLVE_STATUS_", "");
    const badge = status === "FOUND" || status === "CREATED" ? "ok" : status === "NOT_FOUND" ? "warn" : "bad";
    out.appendChild(
      el(
        "p",
        { id: "resolve-status" },
        el("span", { class: `badge ${badge}` }, status),
        " ",
        answer.reason ? el("span", { id: "resolve-reason" }, answer.reason) : "",
        answer.contactPid ? el("span", { class: "note" }, `  contact ${answer.contactPid}`) : "",
      ),
    );
    if ((answer.suggestions || []).length) {
      out.appendChild(el("h3", {}, "Suggestions"));
      out.appendChild(suggestionTable(answer.suggestions));
    }
    if (answer.customer) await renderCustomer(answer.customer, out);
  }

  function suggestionTable(suggestions) {
    return el(
      "table",
      { id: "suggestions" },
      el("tr", {}, el("th", {}, "customer"), el("th", {}, "reason"), el("th", {}, "score"), el("th", {})),
      suggestions.map((s) =>
        el(
          "tr",
          {},
          el("td", { class: "mono" }, s.customerPid),
          el("td", {}, s.reason),
          el("td", {}, (s.score || 0).toFixed(2)),
          el("td", {}, el("button", { class: "small", onclick: () => openCustomer(s.customerPid) }, "open")),
        ),
      ),
    );
  }

  async function renderCustomer(customer, out) {
    state.customer = customer;
    state.journeyToken = "";
    const contacts = customer.contacts || [];
    out.appendChild(
      el(
        "h2",
        { id: "customer-title" },
        "Customer ",
        el("span", { class: "mono", id: "customer-pid" }, customer.customerPid),
        customer.anonymous ? el("span", { class: "badge warn" }, "anonymous") : "",
      ),
    );
    const facts = [];
    if (customer.redirectedFrom) facts.push(`redirected from ${customer.redirectedFrom}`);
    if (customer.splitFrom) facts.push(`split from ${customer.splitFrom}`);
    if (customer.createTime) facts.push(`created ${customer.createTime}`);
    out.appendChild(el("p", { class: "note" }, facts.join(" · ")));

    const graphBox = el("div", {});
    const side = el("div", {}, el("h3", {}, "Records on the selected link"), el("div", { id: "edge-records" }, el("p", { class: "note" }, "Click a link in the graph.")));
    out.appendChild(el("h3", {}, `Contacts (${contacts.length}) and the records that link them`));
    out.appendChild(el("div", { class: "cols" }, graphBox, side));
    const edges = await linkRecords(contacts);
    graphBox.appendChild(drawGraph(contacts, edges));
    if (edges === null) {
      graphBox.appendChild(
        el("p", { class: "note", id: "graph-note" }, "Records on the links are shown to agents and admins, who see the contacts' values."),
      );
    }
    out.appendChild(contactTable(contacts));
    out.appendChild(profileSection(customer));
    out.appendChild(labelsSection(customer));
    out.appendChild(preferencesSection(customer));
    const journey = el("div", { id: "journey" });
    out.appendChild(el("h3", {}, "Journey"));
    out.appendChild(journey);
    await loadJourney(journey, true);
    const history = el("div", { id: "history" });
    out.appendChild(el("h3", {}, "History"));
    out.appendChild(history);
    await loadHistory(history);
  }

  // The records that link the customer's contacts: the chain from the first
  // contact to each other one (ExplainLink), merged into edges. It needs the
  // contacts' values, so roles that see them masked get no edges (null).
  async function linkRecords(contacts) {
    if (!can("agent") || contacts.length < 2) return contacts.length < 2 ? new Map() : null;
    const edges = new Map();
    const linkable = contacts.filter((c) => c.linkable);
    const root = linkable[0];
    if (!root) return edges;
    const calls = linkable.slice(1, MAX_GRAPH_CONTACTS).map((other) =>
      api("POST", accountPath("/contacts:explain"), {
        contact: contactKey(root.type, root.value, root.source),
        other: contactKey(other.type, other.value, other.source),
      }).catch(() => ({ hops: [] })),
    );
    for (const answer of await Promise.all(calls)) {
      for (const hop of answer.hops || []) {
        const pair = [hop.fromContactPid, hop.toContactPid].sort().join("|");
        if (!edges.has(pair)) edges.set(pair, []);
        const records = edges.get(pair);
        if (!records.some((r) => r.source === hop.source && r.recordId === hop.recordId)) {
          records.push({ source: hop.source, recordId: hop.recordId, observedAt: hop.observedAt || "" });
        }
      }
    }
    return edges;
  }

  function shortTime(text) {
    return text ? text.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
  }

  // A deterministic force layout (Fruchterman-Reingold): linked contacts are
  // drawn near each other, unlinked ones apart; room is kept right of each
  // node for its label.
  function layout(contacts, edges, width, height) {
    const n = contacts.length;
    const left = 40;
    const right = width - 200;
    const top = 40;
    const bottom = height - 40;
    const pos = contacts.map((c, i) => {
      const angle = (2 * Math.PI * i) / Math.max(1, n) - Math.PI / 2;
      return { x: (left + right) / 2 + 120 * Math.cos(angle), y: (top + bottom) / 2 + 120 * Math.sin(angle) };
    });
    if (n < 2) return new Map(contacts.map((c, i) => [c.contactPid, pos[i]]));
    const index = new Map(contacts.map((c, i) => [c.contactPid, i]));
    const links = [];
    for (const pair of (edges || new Map()).keys()) {
      const [a, b] = pair.split("|").map((pid) => index.get(pid));
      if (a !== undefined && b !== undefined) links.push([a, b]);
    }
    const k = Math.sqrt(((right - left) * (bottom - top)) / n) * 0.9;
    let heat = (right - left) / 8;
    for (let round = 0; round < 300; round++) {
      const move = pos.map(() => ({ x: 0, y: 0 }));
      for (let i = 0; i < n; i++) {
        for (let j = i + 1; j < n; j++) {
          let dx = pos[i].x - pos[j].x;
          let dy = pos[i].y - pos[j].y;
          let d = Math.hypot(dx, dy);
          if (d < 0.01) {
            dx = 0.01 * (i + 1);
            dy = 0.01;
            d = Math.hypot(dx, dy);
          }
          const push = (k * k) / d;
          move[i].x += (dx / d) * push;
          move[i].y += (dy / d) * push;
          move[j].x -= (dx / d) * push;
          move[j].y -= (dy / d) * push;
        }
      }
      for (const [a, b] of links) {
        const dx = pos[a].x - pos[b].x;
        const dy = pos[a].y - pos[b].y;
        const d = Math.max(0.01, Math.hypot(dx, dy));
        const pull = (d * d) / k;
        move[a].x -= (dx / d) * pull;
        move[a].y -= (dy / d) * pull;
        move[b].x += (dx / d) * pull;
        move[b].y += (dy / d) * pull;
      }
      for (let i = 0; i < n; i++) {
        const d = Math.max(0.01, Math.hypot(move[i].x, move[i].y));
        pos[i].x = Math.min(right, Math.max(left, pos[i].x + (move[i].x / d) * Math.min(d, heat)));
        pos[i].y = Math.min(bottom, Math.max(top, pos[i].y + (move[i].y / d) * Math.min(d, heat)));
      }
      heat = Math.max(1, heat * 0.98);
    }
    return new Map(contacts.map((c, i) => [c.contactPid, pos[i]]));
  }

  function clip(text, size) {
    return text.length > size ? `${text.slice(0, size - 1)}…` : text;
  }

  function drawGraph(contacts, edges) {
    const width = 720;
    const height = 440;
    const where = layout(contacts, edges, width, height);
    const root = svg("svg", { id: "graph", viewBox: `0 0 ${width} ${height}`, role: "img" });
    root.appendChild(svg("title", {}, "Contacts as nodes, records as edges"));
    for (const [pair, records] of edges || []) {
      const [a, b] = pair.split("|").map((pid) => where.get(pid));
      if (!a || !b) continue;
      const manual = records.some((r) => r.source === "manual");
      const first = records[0];
      const more = records.length > 1 ? ` +${records.length - 1}` : "";
      const label = clip(`${first.source}/${first.recordId}`, 22) + more;
      const when = shortTime(first.observedAt).slice(0, 16);
      const mx = (a.x + b.x) / 2;
      const my = (a.y + b.y) / 2;
      const boxWidth = Math.max(label.length, when.length) * 6.2 + 10;
      const group = svg(
        "g",
        { class: manual ? "edge manual" : "edge", "data-edge": pair, tabindex: 0 },
        svg("title", {}, records.map((r) => `${r.source}/${r.recordId} observed ${r.observedAt}`).join("\n")),
        svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y }),
        svg("rect", { x: mx - boxWidth / 2, y: my - 14, width: boxWidth, height: 28, rx: 3 }),
        svg("text", { x: mx, y: my - 2, "text-anchor": "middle" }, label),
        svg("text", { x: mx, y: my + 10, "text-anchor": "middle" }, when),
      );
      const select = () => {
        root.querySelectorAll(".edge.selected").forEach((e) => e.classList.remove("selected"));
        group.classList.add("selected");
        showEdge(pair, records);
      };
      group.addEventListener("click", select);
      group.addEventListener("keydown", (e) => {
        if (e.key === "Enter") select();
      });
      root.appendChild(group);
    }
    const searchedValue = state.searched ? state.searched.answer.contactPid : "";
    for (const c of contacts) {
      const p = where.get(c.contactPid);
      const classes = ["node"];
      if (!c.linkable) classes.push("unlinkable");
      if (c.contactPid === searchedValue) classes.push("searched");
      root.appendChild(
        svg(
          "g",
          { class: classes.join(" "), "data-contact": c.contactPid },
          svg("title", {}, `${describe(c)}${c.linkable ? "" : ` (${c.reason || "not linkable"})`}`),
          svg("circle", { cx: p.x, cy: p.y, r: 10 }),
          svg("text", { x: p.x + 14, y: p.y - 3, class: "kind" }, `${c.type}${c.source ? `/${c.source}` : ""}`),
          svg("text", { x: p.x + 14, y: p.y + 11 }, clip(c.value || "", 24)),
        ),
      );
    }
    return root;
  }

  function contactByPid(pid) {
    return ((state.customer && state.customer.contacts) || []).find((c) => c.contactPid === pid);
  }

  function showEdge(pair, records) {
    const box = clear($("edge-records"));
    const [a, b] = pair.split("|").map(contactByPid);
    box.appendChild(el("p", {}, `${a ? describe(a) : "?"}  —  ${b ? describe(b) : "?"}`));
    box.appendChild(
      el(
        "table",
        { id: "edge-table" },
        el("tr", {}, el("th", {}, "source"), el("th", {}, "record id"), el("th", {}, "observed at"), el("th", {})),
        records.map((r) =>
          el(
            "tr",
            {},
            el("td", {}, r.source),
            el("td", { class: "mono" }, r.recordId),
            el("td", {}, shortTime(r.observedAt)),
            el(
              "td",
              {},
              can("writer")
                ? el(
                    "button",
                    { class: "small danger", "data-unmerge": r.recordId, onclick: () => deleteRecord(r.source, r.recordId) },
                    r.source === "manual" ? "Unmerge" : "Delete record",
                  )
                : "",
            ),
          ),
        ),
      ),
    );
  }

  function contactTable(contacts) {
    return el(
      "table",
      { id: "contacts" },
      el(
        "tr",
        {},
        ["type", "value", "source", "linkable", "connections", ""].map((h) => el("th", {}, h)),
      ),
      contacts.map((c) =>
        el(
          "tr",
          { "data-contact": c.contactPid },
          el("td", {}, c.type),
          el("td", { class: "value" }, c.value || ""),
          el("td", {}, c.source || ""),
          el("td", {}, c.linkable ? el("span", { class: "badge ok" }, "yes") : el("span", { class: "badge bad" }, c.reason || "no")),
          el("td", {}, String(c.connections || 0)),
          el(
            "td",
            {},
            el("button", { class: "small", onclick: () => explainAlone(c) }, "Why"),
            " ",
            can("agent")
              ? el(
                  "button",
                  { class: "small", "data-policy": c.contactPid, onclick: () => setDoNotLink(c, c.reason !== "DO_NOT_LINK") },
                  c.reason === "DO_NOT_LINK" ? "Allow linking" : "Do not link",
                )
              : "",
          ),
        ),
      ),
    );
  }

  function attributeText(value) {
    const [kind, v] = Object.entries(value || {})[0] || ["", ""];
    if (kind === "stringListValue") return (v.values || []).join(", ");
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  function profileSection(customer) {
    const attributes = Object.entries(customer.attributes || {});
    return el(
      "div",
      { id: "profile" },
      el("h3", {}, "Profile"),
      attributes.length
        ? el(
            "table",
            {},
            attributes.map(([name, value]) => el("tr", {}, el("th", {}, name), el("td", { class: "value" }, attributeText(value)))),
          )
        : el("p", { class: "note" }, "No attributes."),
    );
  }

  function labelsSection(customer) {
    const labels = customer.labels || [];
    const box = el("div", { id: "labels" }, el("h3", {}, "Labels"));
    const chips = el("div", { id: "label-chips" });
    labels.forEach((label) =>
      chips.appendChild(
        el(
          "span",
          { class: "chip", "data-label": label },
          el("span", { class: "label-text" }, label),
          can("agent") ? el("button", { class: "small", title: "remove", onclick: () => changeLabels([], [label]) }, "×") : "",
        ),
      ),
    );
    if (!labels.length) chips.appendChild(el("span", { class: "note" }, "No labels."));
    box.appendChild(chips);
    if (can("agent")) {
      const input = el("input", { id: "label-new", placeholder: "new label" });
      box.appendChild(
        el("div", { class: "row" }, input, el("button", { id: "label-add", onclick: () => input.value.trim() && changeLabels([input.value.trim()], []) }, "Add label…")),
      );
    }
    return box;
  }

  const PREFERENCE_FIELDS = [
    ["preferredChannel", "preferred channel"],
    ["preferredAgent", "preferred agent"],
    ["language", "language"],
    ["timeZone", "time zone"],
  ];

  function preferencesSection(customer) {
    const prefs = customer.preferences || {};
    const box = el("div", { id: "preferences" }, el("h3", {}, "Preferences"));
    const inputs = {};
    const table = el("table", {});
    for (const [field, title] of PREFERENCE_FIELDS) {
      const cell = can("agent") ? (inputs[field] = el("input", { value: prefs[field] || "", "data-pref": field })) : prefs[field] || "";
      table.appendChild(el("tr", {}, el("th", {}, title), el("td", { class: "value" }, cell)));
    }
    const consents = (prefs.consents || []).map((c) => `${c.channel}: ${(c.status || "").replace("CONSENT_STATUS_", "")}`);
    table.appendChild(el("tr", {}, el("th", {}, "consents"), el("td", {}, consents.join(", ") || "—")));
    if (prefs.preferredContactPid) {
      const preferred = contactByPid(prefs.preferredContactPid);
      table.appendChild(el("tr", {}, el("th", {}, "outbound contact"), el("td", {}, preferred ? describe(preferred) : prefs.preferredContactPid)));
    }
    box.appendChild(table);
    if (can("agent")) box.appendChild(el("button", { id: "prefs-save", onclick: () => changePreferences(prefs, inputs) }, "Save preferences…"));
    return box;
  }

  async function loadJourney(box, fresh) {
    if (fresh) clear(box);
    const pid = state.customer.customerPid;
    const query = `?page_size=${JOURNEY_PAGE}${state.journeyToken ? `&page_token=${encodeURIComponent(state.journeyToken)}` : ""}`;
    let page;
    try {
      page = await api("GET", accountPath(`/customers/${encodeURIComponent(pid)}/journey${query}`));
    } catch (error) {
      box.appendChild(el("p", { class: "error" }, error.message));
      return;
    }
    const old = box.querySelector("#journey-more");
    if (old) old.remove();
    let table = box.querySelector("table");
    if (!table) {
      table = el("table", {}, el("tr", {}, ["occurred", "channel", "direction", "summary", "contact", ""].map((h) => el("th", {}, h))));
      box.appendChild(table);
    }
    const engagements = page.engagements || [];
    if (!engagements.length && fresh) box.appendChild(el("p", { class: "note" }, "No engagements."));
    for (const e of engagements) {
      const on = contactByPid(e.contactPid);
      table.appendChild(
        el(
          "tr",
          { "data-engagement": e.engagementId },
          el("td", {}, shortTime(e.occurredAt)),
          el("td", {}, e.channel || ""),
          el("td", {}, e.direction || ""),
          el("td", { class: "value" }, e.summary || ""),
          el("td", {}, on ? describe(on) : e.contactPid, e.pinnedCustomerPid ? el("span", { class: "badge warn" }, "pinned") : ""),
          el("td", {}, can("agent") ? el("button", { class: "small", onclick: () => relink(e) }, "Relink…") : ""),
        ),
      );
    }
    state.journeyToken = page.nextPageToken || "";
    if (state.journeyToken) {
      box.appendChild(el("button", { id: "journey-more", onclick: () => loadJourney(box, false) }, "More"));
    }
  }

  async function loadHistory(box) {
    const pid = state.customer.customerPid;
    let page;
    try {
      page = await api("GET", accountPath(`/customers/${encodeURIComponent(pid)}/history?page_size=100`));
    } catch (error) {
      box.appendChild(el("p", { class: "error" }, error.message));
      return;
    }
    const events = page.events || [];
    box.appendChild(
      el(
        "table",
        {},
        el("tr", {}, ["seq", "when", "what", "who", "customers", "detail"].map((h) => el("th", {}, h))),
        events.map((e) =>
          el(
            "tr",
            {},
            el("td", {}, e.seq),
            el("td", {}, shortTime(e.time)),
            el("td", {}, (e.kind || "").replace("CHANGE_KIND_", "").toLowerCase()),
            el("td", {}, e.actor || "source"),
            el("td", { class: "mono" }, (e.otherCustomerPids || []).join(" ")),
            el("td", {}, e.detail || ""),
          ),
        ),
      ),
    );
  }

  // -- why ---------------------------------------------------------------------------------

  function contactFields(box, prefix) {
    clear(box);
    const legend = box.dataset.legend || "";
    if (legend) box.appendChild(el("legend", {}, legend));
    const pick = el("select", { id: `${prefix}-pick` }, el("option", { value: "" }, "— type it below —"));
    const contacts = (state.customer && state.customer.contacts) || [];
    contacts.forEach((c, i) => pick.appendChild(el("option", { value: String(i) }, describe(c))));
    const type = el("input", { id: `${prefix}-type`, list: "key-types", placeholder: "type" });
    const value = el("input", { id: `${prefix}-value`, placeholder: "value" });
    const source = el("input", { id: `${prefix}-source`, placeholder: "source" });
    pick.addEventListener("change", () => {
      const c = contacts[Number(pick.value)];
      if (!c) return;
      type.value = c.type;
      value.value = c.value || "";
      source.value = c.source || "";
    });
    box.appendChild(el("div", { class: "row" }, el("label", {}, "From the customer", pick)));
    box.appendChild(el("div", { class: "row" }, type, value, source));
  }

  function readContact(prefix) {
    const type = $(`${prefix}-type`).value.trim();
    const value = $(`${prefix}-value`).value;
    if (!type || !value) return null;
    return contactKey(type, value, $(`${prefix}-source`).value.trim());
  }

  function fillContactPickers() {
    $("why-a").dataset.legend = "Contact";
    $("why-b").dataset.legend = "Other contact (optional)";
    contactFields($("why-a"), "why-a");
    contactFields($("why-b"), "why-b");
  }

  function fillMergePickers() {
    $("merge-a").dataset.legend = "Contact";
    $("merge-b").dataset.legend = "Contact";
    contactFields($("merge-a"), "merge-a");
    contactFields($("merge-b"), "merge-b");
  }

  async function explain(a, b) {
    const out = clear($("why-result"));
    const body = { contact: a };
    if (b) body.other = b;
    try {
      const answer = await api("POST", accountPath("/contacts:explain"), body);
      if (b) {
        out.appendChild(
          el("p", { id: "why-verdict" }, answer.linked ? el("span", { class: "badge ok" }, "linked") : el("span", { class: "badge bad" }, "not linked"), ` ${describe(a)} and ${describe(b)}`),
        );
      } else {
        out.appendChild(el("p", { id: "why-verdict" }, describe(a), answer.customerPid ? ` is in customer ${answer.customerPid}` : ""));
      }
      const hops = answer.hops || [];
      if (hops.length) {
        out.appendChild(el("h3", {}, "The chain of records"));
        out.appendChild(
          el(
            "ol",
            { class: "chain", id: "why-chain" },
            hops.map((h) => {
              const from = contactByPid(h.fromContactPid);
              const to = contactByPid(h.toContactPid);
              return el(
                "li",
                { "data-record": `${h.source}/${h.recordId}` },
                `${from ? describe(from) : h.fromContactPid} → ${to ? describe(to) : h.toContactPid}: record `,
                el("strong", {}, `${h.source}/${h.recordId}`),
                ` observed ${shortTime(h.observedAt)}`,
              );
            }),
          ),
        );
      }
      const reasons = answer.reasons || [];
      if (reasons.length) {
        out.appendChild(el("h3", {}, "Why not"));
        out.appendChild(el("ul", { id: "why-reasons" }, reasons.map((r) => el("li", {}, r))));
      }
      if (!b) {
        const resolved = await api("POST", accountPath("/contacts:resolve"), { contact: a });
        if (resolved.reason) out.appendChild(el("p", {}, `Resolve says: ${resolved.reason}`));
        if ((resolved.suggestions || []).length) {
          out.appendChild(el("h3", {}, "Suggestions"));
          out.appendChild(suggestionTable(resolved.suggestions));
        }
      }
    } catch (error) {
      out.appendChild(el("p", { class: "error" }, error.message));
    }
  }

  function explainAlone(c) {
    showTab("why");
    const contacts = state.customer.contacts || [];
    $("why-a-pick").value = String(contacts.indexOf(c));
    $("why-a-pick").dispatchEvent(new Event("change"));
    explain(contactKey(c.type, c.value, c.source), null);
  }

  // -- acts --------------------------------------------------------------------------------

  async function refresh() {
    if (state.searched) {
      const answer = await api("POST", accountPath("/contacts:resolve"), { contact: state.searched.key });
      state.searched.answer = answer;
      await renderResolve(answer);
    } else if (state.customer) {
      await openCustomer(state.customer.customerPid);
    }
  }

  async function customerOf(key) {
    const answer = await api("POST", accountPath("/contacts:resolve"), { contact: key });
    return answer.customer ? `customer ${answer.customer.customerPid} (${(answer.customer.contacts || []).length} contacts)` : "a contact not seen yet";
  }

  async function merge() {
    const a = readContact("merge-a");
    const b = readContact("merge-b");
    if (!a || !b) return say("Give two contacts to merge.", true);
    try {
      const changes = [
        `${describe(a)}: ${await customerOf(a)}`,
        `${describe(b)}: ${await customerOf(b)}`,
        "become one customer, by a manual record with you as its author",
        "unmerge later by deleting that record",
      ];
      if (!(await confirmChange("Merge these contacts", changes))) return say("Not merged.");
      const answer = await api("POST", accountPath("/customers:mergeKeys"), { contacts: [a, b] });
      clear($("act-result")).appendChild(
        el("p", { id: "merge-done" }, `Merged: ${(answer.outcome || "").replace("RECORD_OUTCOME_", "")}; record ${answer.source}/${answer.recordId}; customer ${answer.customer ? answer.customer.customerPid : ""}`),
      );
      $("delete-source").value = answer.source || "manual";
      $("delete-record").value = answer.recordId || "";
      say("Merged.");
      await refresh();
    } catch (error) {
      failed(error);
    }
  }

  async function deleteRecord(source, recordId) {
    const contacts = (state.customer && state.customer.contacts) || [];
    const changes = [
      `record ${source}/${recordId} is deleted: its evidence no longer links contacts`,
      state.customer ? `customer ${state.customer.customerPid} (${contacts.length} contacts) splits where nothing else links its parts` : "the customers it held together split",
    ];
    if (!(await confirmChange(source === "manual" ? "Unmerge" : "Delete a record", changes))) return say("Nothing deleted.");
    try {
      await api("POST", accountPath("/records:delete"), { source, recordId });
      say(`Deleted ${source}/${recordId}.`);
      await refresh();
    } catch (error) {
      failed(error);
    }
  }

  async function setDoNotLink(c, doNotLink) {
    const changes = doNotLink
      ? [`${describe(c)} is marked do-not-link: it links to nothing and stands as its own customer`, `customer ${state.customer.customerPid} loses it (and splits if it held parts together)`]
      : [`${describe(c)} may link again: customers that share records with it merge`];
    if (!(await confirmChange(doNotLink ? "Do not link" : "Allow linking", changes))) return say("Unchanged.");
    try {
      await api("POST", accountPath("/contacts:setPolicy"), {
        contact: contactKey(c.type, c.value, c.source),
        doNotLink,
        updateMask: "do_not_link",
      });
      say("Policy changed.");
      await refresh();
    } catch (error) {
      failed(error);
    }
  }

  async function changeLabels(add, remove) {
    const changes = [...add.map((l) => `add label "${l}"`), ...remove.map((l) => `remove label "${l}"`)];
    if (!(await confirmChange("Change labels", changes))) return say("Labels unchanged.");
    try {
      const pid = state.customer.customerPid;
      // No update mask and no labels in the customer: only these labels change.
      await api("POST", accountPath(`/customers/${encodeURIComponent(pid)}:update`), {
        customer: { customerPid: pid },
        addLabels: add,
        removeLabels: remove,
      });
      say("Labels changed.");
      await refresh();
    } catch (error) {
      failed(error);
    }
  }

  async function changePreferences(old, inputs) {
    const next = JSON.parse(JSON.stringify(old));
    const changes = [];
    for (const [field, title] of PREFERENCE_FIELDS) {
      const value = inputs[field].value.trim();
      if (value !== (old[field] || "")) {
        changes.push(`${title}: "${old[field] || ""}" → "${value}"`);
        if (value) next[field] = value;
        else delete next[field];
      }
    }
    if (!changes.length) return say("No preference changed.");
    if (!(await confirmChange("Change preferences", changes))) return say("Preferences unchanged.");
    try {
      const pid = state.customer.customerPid;
      await api("POST", accountPath(`/customers/${encodeURIComponent(pid)}:update`), {
        customer: { customerPid: pid, preferences: next },
        updateMask: "preferences",
      });
      say("Preferences changed.");
      await refresh();
    } catch (error) {
      failed(error);
    }
  }

  async function relink(engagement) {
    const target = window.prompt("Pin this engagement to which customer (PID)?", "");
    if (!target) return;
    const changes = [
      `engagement ${engagement.engagementId} (${engagement.channel || ""}, ${shortTime(engagement.occurredAt)})`,
      `leaves the journey of ${state.customer.customerPid}`,
      `joins the journey of ${target.trim()}, and stays there through later merges`,
    ];
    if (!(await confirmChange("Relink an engagement", changes))) return say("Not relinked.");
    try {
      await api("POST", accountPath(`/engagements/${encodeURIComponent(engagement.engagementId)}:relink`), {
        customerPid: target.trim(),
      });
      say("Relinked.");
      await refresh();
    } catch (error) {
      failed(error);
    }
  }

  // -- review --------------------------------------------------------------------------------

  async function loadIsolated() {
    const out = clear($("isolated-result"));
    try {
      const page = await api("GET", accountPath("/isolatedContacts?page_size=100"));
      const contacts = page.contacts || [];
      if (!contacts.length) return out.appendChild(el("p", { class: "note" }, "No isolated contacts."));
      out.appendChild(
        el(
          "table",
          { id: "isolated" },
          el("tr", {}, ["type", "value", "source", "connections", "reason"].map((h) => el("th", {}, h))),
          contacts.map((c) => el("tr", {}, el("td", {}, c.type), el("td", { class: "value" }, c.value || ""), el("td", {}, c.source || ""), el("td", {}, String(c.connections || 0)), el("td", {}, c.reason || ""))),
        ),
      );
    } catch (error) {
      out.appendChild(el("p", { class: "error" }, error.message));
    }
  }

  async function preview(event) {
    event.preventDefault();
    const out = clear($("preview-result"));
    const body = { maxExamples: 5 };
    const typeName = $("preview-type").value.trim();
    try {
      if (typeName) {
        const types = (await api("GET", accountPath("/keyTypes"))).keyTypes || [];
        const current = types.find((t) => t.name === typeName) || { name: typeName };
        const next = JSON.parse(JSON.stringify(current));
        if ($("preview-max-per").value !== "") next.maxPerCustomer = Number($("preview-max-per").value);
        const blocked = $("preview-blocked").value.trim();
        if (blocked) next.blockedValues = blocked.split(",").map((v) => v.trim()).filter(Boolean);
        body.keyType = next;
      }
      if ($("preview-max-contacts").value !== "" || $("preview-isolate").value !== "") {
        body.policy = {};
        if ($("preview-max-contacts").value !== "") body.policy.maxContacts = Number($("preview-max-contacts").value);
        if ($("preview-isolate").value !== "") body.policy.isolateMinConnections = Number($("preview-isolate").value);
      }
      const answer = await api("POST", accountPath(":previewConfigChange"), body);
      out.appendChild(el("p", { id: "preview-counts" }, `${answer.merges || 0} customers would be formed by merges, ${answer.splits || 0} would split.`));
      for (const example of answer.mergeExamples || []) {
        out.appendChild(el("p", { class: "mono" }, `merge: ${(example.customerPids || []).join(" + ")}`));
      }
      for (const pid of answer.splitCustomerPids || []) {
        out.appendChild(el("p", {}, "split: ", el("button", { class: "small", onclick: () => { showTab("search"); openCustomer(pid); } }, pid)));
      }
    } catch (error) {
      out.appendChild(el("p", { class: "error" }, error.message));
    }
  }

  async function loadKeys() {
    const out = clear($("keys-result"));
    try {
      const keys = (await api("GET", accountPath("/apiKeys?page_size=1000"))).keys || [];
      out.appendChild(
        el(
          "table",
          { id: "keys" },
          el("tr", {}, ["key", "role", "description", "state", ""].map((h) => el("th", {}, h))),
          keys.map((k) =>
            el(
              "tr",
              { "data-key": k.keyId },
              el("td", { class: "mono" }, k.keyId),
              el("td", {}, (k.role || "").replace("ROLE_", "").toLowerCase()),
              el("td", {}, k.description || ""),
              el("td", {}, k.revokeTime ? "revoked" : k.flagged ? `flagged: ${k.flagReason || ""}` : "live"),
              el("td", {}, k.revokeTime ? "" : el("button", { class: "small", onclick: () => makeInteractive(k) }, "Make interactive…")),
            ),
          ),
        ),
      );
    } catch (error) {
      out.appendChild(el("p", { class: "error" }, error.message));
    }
  }

  async function makeInteractive(k) {
    const changes = [
      `${k.keyId} becomes a person's key: every sign-in and every call needs a TOTP code`,
      "a new TOTP seed is made; any earlier enrolment and its sessions end",
      "the QR code is shown once: scan it with an authenticator app now",
    ];
    if (!(await confirmChange("Make a key interactive", changes))) return;
    try {
      const answer = await api("POST", accountPath(`/apiKeys/${encodeURIComponent(k.keyId)}:setInteractive`), { interactive: true });
      const out = $("keys-result");
      // The SVG is shown as an image (a data: URL), so nothing in it can run.
      const image = el("img", { class: "qr", alt: "TOTP enrolment QR code", id: "enrol-qr" });
      image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(answer.qrSvg)}`;
      out.appendChild(el("div", { id: "enrolment" }, el("h3", {}, `Enrol ${answer.keyId}`), image, el("p", { class: "mono" }, answer.otpauthUri)));
      say("The key is interactive.");
    } catch (error) {
      failed(error);
    }
  }

  // -- wiring --------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("search-form").addEventListener("submit", search);
    $("open-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const pid = $("open-pid").value.trim();
      if (pid) openCustomer(pid);
    });
    document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
    $("why-submit").addEventListener("click", () => {
      const a = readContact("why-a");
      if (!a) return say("Give at least one contact.", true);
      explain(a, readContact("why-b"));
    });
    $("merge-submit").addEventListener("click", merge);
    $("delete-form").addEventListener("submit", (event) => {
      event.preventDefault();
      deleteRecord($("delete-source").value.trim(), $("delete-record").value.trim());
    });
    $("isolated-load").addEventListener("click", loadIsolated);
    $("preview-form").addEventListener("submit", preview);
    $("keys-load").addEventListener("click", loadKeys);
  });
})();
