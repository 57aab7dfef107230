// memmie's web UI: live parts of a page. An element with data-live (a Server-Sent Events
// URL of the UI) and data-fragment (the URL of its HTML) is fetched again each time the
// stream says "changed". No build step, no dependency.
"use strict";

function follow(el) {
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const resp = await fetch(el.dataset.fragment, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (resp.ok) {
        el.innerHTML = await resp.text();
        el.dataset.refreshed = String(Number(el.dataset.refreshed || "0") + 1);
      }
    } catch (e) {
      console.warn("memmie ui: refresh", e);
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  // EventSource reconnects by itself when the server or the network drops the stream.
  const src = new EventSource(el.dataset.live, { withCredentials: true });
  src.addEventListener("changed", refresh);
  src.addEventListener("open", () => { el.dataset.live_open = "1"; });
  window.addEventListener("pagehide", () => src.close());
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live][data-fragment]").forEach(follow);
});
