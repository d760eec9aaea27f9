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

  // POST a form to this origin, then show the outcome and reload the page.
  function post(path, taskId) {
    var body = new URLSearchParams({ task_id: taskId });
    return fetch(path, { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) { if (data.status !== "ok") window.alert(data.message); })
      .catch(function (err) { window.alert("request failed: " + err.message); })
      .finally(function () { window.location.reload(); });
  }

  // POST to a REST route of this origin (no body), then show the outcome and reload.
  function postApi(path) {
    return fetch(path, { method: "POST", credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) { if (data.status !== "ok") window.alert(data.message); })
      .catch(function (err) { window.alert("request failed: " + err.message); })
      .finally(function () { window.location.reload(); });
  }

  // Cancel (after a confirmation: the crawl stops) and Resume (queues the task again);
  // a schedule's Pause and Resume.
  document.addEventListener("click", function (event) {
    var cancel = event.target.closest("button[data-cancel]");
    var resume = event.target.closest("button[data-resume]");
    var pause = event.target.closest("button[data-schedule-pause]");
    var unpause = event.target.closest("button[data-schedule-resume]");
    if (pause || unpause) {
      var button = pause || unpause;
      var sid = button.getAttribute(pause ? "data-schedule-pause" : "data-schedule-resume");
      button.disabled = true;
      postApi("/api/schedules/" + encodeURIComponent(sid) + (pause ? "/pause" : "/resume"));
    } else if (cancel) {
      var id = cancel.getAttribute("data-cancel");
      var question = "Cancel task #" + id + "? The crawl stops after what it is doing; " +
        "the task keeps what it stored and can be resumed.";
      if (!window.confirm(question)) return;
      cancel.disabled = true;
      post("/cancel-task.json", id);
    } else if (resume) {
      resume.disabled = true;
      post("/collect.json", resume.getAttribute("data-resume"));
    }
  });

  if (isLive()) window.setTimeout(refresh, PERIOD_MS);
})();
