// "Add a row" for the inline formsets of the post-mortem form: clones the
// empty form and renumbers it, as Django's management form expects.
document.querySelectorAll("fieldset.formset").forEach((fieldset) => {
  const prefix = fieldset.dataset.prefix;
  const total = fieldset.querySelector(`#id_${prefix}-TOTAL_FORMS`);
  const template = fieldset.querySelector("template");
  const rows = fieldset.querySelector(".rows");
  fieldset.querySelector(".add-row").addEventListener("click", () => {
    const index = parseInt(total.value, 10);
    const html = template.innerHTML.replace(/__prefix__/g, String(index));
    rows.insertAdjacentHTML("beforeend", html);
    total.value = String(index + 1);
    const first = rows.lastElementChild.querySelector("input:not([type=hidden]), select, textarea");
    if (first) first.focus();
  });
});
