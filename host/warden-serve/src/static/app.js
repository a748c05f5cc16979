// warden serve: live progress on a run page. Served by the binary; no inline script anywhere
// (the Content-Security-Policy forbids it). Without JavaScript the page still works: it links
// to itself to refresh.
"use strict";
(function () {
  const status = document.querySelector("[data-status]");
  const log = document.getElementById("log");
  if (!status || !log || !window.EventSource) return;
  const done = ["completed", "failed", "refused", "rejected", "expired", "outcome-unknown"];
  if (done.includes(status.dataset.status)) return;
  // Only the lines after the ones the page shows; a reconnect (the stream ends after a while)
  // sends Last-Event-ID, so nothing comes twice.
  const after = encodeURIComponent(log.dataset.after || "0");
  const source = new EventSource(window.location.pathname + "/events?after=" + after);
  source.addEventListener("log", (event) => {
    const line = JSON.parse(event.data);
    const item = document.createElement("li");
    item.textContent = "[" + line.level + "] " + line.line;
    log.appendChild(item);
  });
  source.addEventListener("status", (event) => {
    const value = JSON.parse(event.data);
    status.dataset.status = value.status;
    status.textContent = value.status;
    if (done.includes(value.status)) {
      source.close();
      // The results and the downloads are rendered by the server.
      window.location.reload();
    }
  });
})();
