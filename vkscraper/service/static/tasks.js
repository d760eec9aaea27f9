// The task page refreshes itself: while a task on it is queued or running (data-live="1"),
// fetch the same page's <main> every 2 s and swap it in. Plain JavaScript, no libraries.
"use strict";
(function () {
  var PERIOD_MS = 2000;

  function partialUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    return url.toString();
  }

  function isLive() {
    var main = document.querySelector("main");
    return main !== null && main.getAttribute("data-live") === "1";
  }

  function refresh() {
    if (!isLive()) return;
    fetch(partialUrl(), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (next && main) {
          main.innerHTML = next.innerHTML;
          main.setAttribute("data-live", next.getAttribute("data-live") || "0");
        }
      })
      .catch(function (err) {
        var note = document.getElementById("live-note");
        if (note) note.textContent = "refresh failed (" + err.message + "), retrying";
      })
      .finally(function () { if (isLive()) window.setTimeout(refresh, PERIOD_MS); });
  }

  // Cancel buttons: POST /cancel-task.json, then refresh at once.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-cancel]");
    if (!button) return;
    button.disabled = true;
    var body = new URLSearchParams({ task_id: button.getAttribute("data-cancel") });
    fetch("/cancel-task.json", { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) { if (data.status !== "ok") window.alert(data.message); })
      .catch(function (err) { window.alert("cancel failed: " + err.message); })
      .finally(function () { window.location.reload(); });
  });

  if (isLive()) window.setTimeout(refresh, PERIOD_MS);
})();
