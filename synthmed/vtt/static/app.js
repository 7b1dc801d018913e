// Rater page of a synthmed visual assessment study: plain JavaScript, same-origin JSON API only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SECTIONS = ["loading", "login", "rate", "done", "admin", "failure"];
  const VIEW_TITLES = { axial: "Axial", coronal: "Coronal", sagittal: "Sagittal", image: "Image" };
  let current = null; // the item on screen: {item_id, position, total, views}
  let busy = false;

  async function api(path, body) {
    const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    return { status: response.status, ok: response.ok, data };
  }

  function show(section) {
    for (const id of SECTIONS) $(id).hidden = id !== section;
  }

  function fail(message) {
    $("failure-text").textContent = message;
    show("failure");
  }

  function detail(result) {
    const d = result.data && result.data.detail;
    return typeof d === "string" ? d : `the server answered ${result.status}`;
  }

  async function start() {
    const me = await api("/api/me");
    if (me.status === 401) {
      $("who").hidden = true;
      show("login");
      $("token").focus();
      return;
    }
    if (!me.ok) return fail(`Cannot load the study: ${detail(me)}.`);
    $("who-name").textContent = me.data.name;
    $("who").hidden = false;
    if (me.data.role === "admin") return loadAdmin();
    return loadNext();
  }

  async function loadNext() {
    const next = await api("/api/next");
    if (next.status === 401) return start();
    if (!next.ok) return fail(`Cannot load the next case: ${detail(next)}.`);
    if (next.data.done) return show("done");
    showItem(next.data);
  }

  function viewFigure(view, maskShown) {
    const figure = document.createElement("figure");
    const stack = document.createElement("div");
    stack.className = maskShown ? "stack" : "stack mask-hidden";
    for (const layer of ["image", "overlay"]) {
      const img = document.createElement("img");
      img.className = layer;
      img.src = view[layer];
      img.width = view.width;
      img.height = view.height;
      img.alt = layer === "image" ? `${VIEW_TITLES[view.name] || view.name} view` : "";
      img.draggable = false;
      stack.appendChild(img);
    }
    const caption = document.createElement("figcaption");
    caption.textContent = VIEW_TITLES[view.name] || view.name;
    figure.append(stack, caption);
    return figure;
  }

  function showItem(item) {
    current = item;
    const maskShown = $("overlay-toggle").checked;
    $("views").replaceChildren(...item.views.map((v) => viewFigure(v, maskShown)));
    $("progress-text").textContent = `Case ${item.position} of ${item.total}`;
    $("progress").max = item.total;
    $("progress").value = item.rated;
    for (const input of document.querySelectorAll("#scale input")) input.checked = false;
    $("comment").value = "";
    $("comment-count").textContent = "0";
    $("submit").disabled = true;
    $("rate-error").textContent = "";
    show("rate");
    window.scrollTo(0, 0);
  }

  function buildScale() {
    const scale = $("scale");
    for (let score = 0; score <= 10; score += 1) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "score";
      input.value = String(score);
      input.addEventListener("change", () => { $("submit").disabled = busy; });
      const text = document.createElement("span");
      text.textContent = String(score);
      label.append(input, text);
      scale.appendChild(label);
    }
  }

  function selectedScore() {
    const checked = document.querySelector("#scale input:checked");
    return checked ? Number.parseInt(checked.value, 10) : null;
  }

  async function submitRating(event) {
    event.preventDefault();
    const score = selectedScore();
    if (busy || current === null || score === null) return;
    busy = true;
    $("submit").disabled = true;
    try {
      const result = await api("/api/ratings", { item_id: current.item_id, score, comment: $("comment").value });
      if (result.status === 201 || result.status === 409) return await loadNext(); // 409: saved before (e.g. another tab)
      if (result.status === 401) return await start();
      $("rate-error").textContent = `Not saved: ${detail(result)}.`;
      $("submit").disabled = false;
    } catch (err) {
      $("rate-error").textContent = "Not saved: the server cannot be reached. Try again.";
      $("submit").disabled = false;
    } finally {
      busy = false;
    }
  }

  async function login(event) {
    event.preventDefault();
    $("login-error").textContent = "";
    const result = await api("/api/login", { token: $("token").value.trim() });
    $("token").value = "";
    if (!result.ok) {
      $("login-error").textContent = result.status === 401 ? "This token is not valid for this study." : `Login failed: ${detail(result)}.`;
      return;
    }
    await start();
  }

  async function logout() {
    await api("/api/logout", {});
    current = null;
    await start();
  }

  async function loadAdmin() {
    const result = await api("/api/admin/progress");
    if (!result.ok) return fail(`Cannot load the progress: ${detail(result)}.`);
    const rows = result.data.people.map((p) => {
      const tr = document.createElement("tr");
      for (const value of [p.rater, p.rated, p.assigned, p.last_rating_at || "–"]) {
        const td = document.createElement("td");
        td.textContent = String(value);
        tr.appendChild(td);
      }
      return tr;
    });
    $("admin-rows").replaceChildren(...rows);
    $("admin-summary").textContent = `Study ${result.data.study_id}: ${result.data.n_items} cases per rater.`;
    show("admin");
  }

  function toggleMask() {
    const shown = $("overlay-toggle").checked;
    for (const stack of document.querySelectorAll("#views .stack")) stack.classList.toggle("mask-hidden", !shown);
  }

  document.addEventListener("DOMContentLoaded", () => {
    buildScale();
    $("login-form").addEventListener("submit", login);
    $("rating-form").addEventListener("submit", submitRating);
    $("logout").addEventListener("click", logout);
    $("overlay-toggle").addEventListener("change", toggleMask);
    $("comment").addEventListener("input", () => { $("comment-count").textContent = String($("comment").value.length); });
    document.addEventListener("keydown", (event) => {
      const typing = event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLInputElement && event.target.type !== "radio" && event.target.type !== "checkbox";
      if (!typing && (event.key === "m" || event.key === "M") && !$("rate").hidden) {
        $("overlay-toggle").checked = !$("overlay-toggle").checked;
        toggleMask();
      }
    });
    start().catch(() => fail("The server cannot be reached. Reload the page to try again."));
  });
})();
