// The approvals page is served whole (its forms need no script); this only reloads it when the set of pending
// questions or of answers being applied changes, and never while a form is being filled in.
"use strict";
(function () {
  const script = document.currentScript;
  const root = script.dataset.root, pollMs = Number(script.dataset.pollMs);
  let shown = null, typing = false;
  document.addEventListener("input", () => { typing = true; });

  function signature(state) {
    return JSON.stringify([state.pending.map(p => [p.run_id, p.lane, p.node_id]),
      state.answers.map(a => [a.run_id, a.lane, a.node_id, a.state])]);
  }

  async function poll() {
    try {
      const response = await fetch(root + "/api/approvals", {cache: "no-store"});
      if (response.ok) {
        const now = signature(await response.json());
        if (shown === null) shown = now;
        else if (now !== shown && !typing) { window.location.replace(root + "/approvals"); return; }
      }
    } catch (error) { /* the server restarts: ask again next time */ }
    setTimeout(poll, pollMs);
  }
  poll();
})();
