// Tether web console: the live status of a request's page. It long-polls
// the page's status URL (same origin, the session's cookie) and updates
// #state and #waiting in place. Without it the page still works: its
// reload link shows the same. No eval, no inline script: the CSP allows
// only this file.
"use strict";
(function () {
  var state = document.getElementById("state");
  if (!state || !state.dataset.status) {
    return;
  }
  var waiting = document.getElementById("waiting");
  var changed = document.getElementById("changed");
  var version = state.dataset.version;
  var live = { pending: true, approved: true, active: true };
  var failures = 0;
  function show(s) {
    state.textContent = s.state;
    state.className = "state-" + s.state;
    if (waiting) {
      waiting.textContent = s.waiting && s.waiting.length ? " — waiting for " + s.waiting.join(" and ") : "";
    }
    if (changed) {
      changed.hidden = false;
    }
  }
  function poll() {
    var url = state.dataset.status + "?wait=25s&version=" + encodeURIComponent(version);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (res) {
        if (!res.ok) {
          throw new Error("status " + res.status);
        }
        return res.json();
      })
      .then(function (s) {
        failures = 0;
        if (String(s.version) !== String(version)) {
          version = s.version;
          show(s);
        }
        if (live[s.state]) {
          poll();
        }
      })
      .catch(function () {
        // Back off, and give up after a while: the reload link remains.
        failures++;
        if (failures < 10) {
          setTimeout(poll, 2000 * failures);
        }
      });
  }
  if (live[state.textContent]) {
    poll();
  }
})();
