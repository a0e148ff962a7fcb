// onlineca console: conveniences only. Every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // "select every device on this page"
  for (const all of document.querySelectorAll("input[data-select-all]")) {
    const name = all.dataset.selectAll;
    all.addEventListener("change", () => {
      for (const box of all.form.querySelectorAll(`input[type=checkbox][name="${name}"]`)) box.checked = all.checked;
    });
  }
  // a confirmation before deleting
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => { if (!window.confirm(form.dataset.confirm)) event.preventDefault(); });
  }
  // "Go back" on the error page
  for (const link of document.querySelectorAll("a[data-back]")) {
    link.addEventListener("click", (event) => { if (history.length > 1) { event.preventDefault(); history.back(); } });
  }
  // the dashboard refreshes itself every 30 s while visible
  if (document.querySelector("a[data-refresh]")) {
    setInterval(() => { if (document.visibilityState === "visible") location.reload(); }, 30000);
  }
});
