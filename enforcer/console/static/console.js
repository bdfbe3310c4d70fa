// The console's one script (CSP: script-src 'self'; no inline script).
// It never puts a value from an event into the page: events only say that
// something changed, and the server re-renders (and escapes) the fragment.
(function () {
  "use strict";

  function countdowns() {
    var nodes = document.querySelectorAll(".countdown[data-left]");
    for (var i = 0; i < nodes.length; i++) {
      var n = nodes[i];
      if (!n.dataset.t0) { n.dataset.t0 = String(Date.now()); }
      var left = parseFloat(n.dataset.left) - (Date.now() - parseInt(n.dataset.t0, 10)) / 1000;
      if (!(left > 0)) {
        n.textContent = "expired";
        n.classList.add("due");
        continue;
      }
      var s = Math.floor(left), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
      n.textContent = (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s left";
      n.classList.toggle("due", left < 60);
    }
  }

  function replace(url, target, after) {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } }).then(function (r) {
      if (r.status === 401) { window.location.reload(); return null; }
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html === null || html === undefined) { return; }
      // Server-rendered and autoescaped; innerHTML never runs scripts, and the CSP forbids inline ones.
      target.innerHTML = html;
      countdowns();
      if (after) { after(); }
    });
  }

  function debounce(fn, ms) {
    var t = null;
    return function () {
      if (t) { clearTimeout(t); }
      t = setTimeout(function () { t = null; fn(); }, ms);
    };
  }

  function stream(url, handlers) {
    var live = document.getElementById("live");
    var es = new EventSource(url);
    es.onopen = function () { if (live) { live.classList.add("on"); } };
    es.onerror = function () { if (live) { live.classList.remove("on"); } };
    es.addEventListener("logout", function () { es.close(); window.location.reload(); });
    es.addEventListener("lagged", function () { es.close(); window.location.reload(); });
    Object.keys(handlers).forEach(function (name) { es.addEventListener(name, handlers[name]); });
    return es;
  }

  var page = document.body.dataset.page;
  if (page === "queue") {
    var list = document.getElementById("queue");
    var refresh = debounce(function () { replace("/fragments/queue", list); }, 150);
    stream("/events", { approval: refresh });
  } else if (page === "approval") {
    var id = document.body.dataset.approval;
    var state = document.getElementById("approval-state");
    var refreshState = debounce(function () { replace("/fragments/approvals/" + encodeURIComponent(id), state); }, 100);
    var es = stream("/approvals/" + encodeURIComponent(id) + "/events", {
      approval: function (e) {
        var a = JSON.parse(e.data);
        if (a.status !== "pending") {
          var form = document.getElementById("decide");
          if (form) { form.remove(); }
        }
        refreshState();
      },
      end: function () { es.close(); refreshState(); }
    });
  }
  countdowns();
  setInterval(countdowns, 1000);
})();
