// Live updates for the console's pages, as progressive enhancement: every
// page works without this script; with it, the parts marked data-live are
// fetched again every 5 seconds and swapped in place (the session cookie
// goes with the request, same origin). Updates pause while the operator is
// typing, has selected rows, or the tab is hidden.
(function () {
  "use strict";
  var live = document.querySelectorAll("[data-live]");
  var dot = document.getElementById("live-dot");
  if (!live.length) return;
  if (dot) dot.classList.add("on");
  function busy() {
    var a = document.activeElement;
    if (a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA")) return true;
    return document.querySelector("input[type=checkbox][name=ids]:checked") !== null;
  }
  function refresh() {
    if (document.hidden || busy()) return;
    fetch(window.location.href, { headers: { "X-Live-Update": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var fresh = doc.querySelector('[data-live="' + el.getAttribute("data-live") + '"]');
          if (fresh) el.replaceWith(fresh);
        });
        if (dot) { dot.classList.add("on"); dot.title = "live: updated " + new Date().toLocaleTimeString(); }
      })
      .catch(function () { if (dot) dot.classList.remove("on"); });
  }
  setInterval(refresh, 5000);
})();
