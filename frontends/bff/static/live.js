// Live parts of a page without a reload: an element with data-live-url is re-fetched every
// data-live-ms milliseconds and its content replaced by the server-rendered fragment. A
// fragment that contains [data-live-final] ends the polling (e.g. a finished saga). With
// JavaScript off, the pages still work: the fragment is part of the page, reload to update.
(function () {
  "use strict";
  function poll(el) {
    var url = el.getAttribute("data-live-url");
    var every = parseInt(el.getAttribute("data-live-ms") || "2000", 10);
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html", "X-Live": "1" } })
        .then(function (r) {
          if (r.redirected || r.status === 401 || r.status === 403) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined) {
            el.innerHTML = html;
            el.setAttribute("data-live-updated", String(Date.now()));
          }
          if (!el.querySelector("[data-live-final]")) { window.setTimeout(tick, every); }
        })
        .catch(function () { window.setTimeout(tick, every * 2); });
    }
    if (!el.querySelector("[data-live-final]")) { window.setTimeout(tick, every); }
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live-url]").forEach(poll);
  });
})();
