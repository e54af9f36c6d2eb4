// The language picker submits itself when changed (no inline handler: the pages' CSP
// allows scripts from the service only).
for (const select of document.querySelectorAll("select[data-submit-on-change]")) {
  select.addEventListener("change", () => select.form.submit());
}
