// Re-fetch the live part of a page every 2 s while it says something is active; with
// data-reload-when-done, reload the whole page once it is not (the results appear).
document.querySelectorAll("[data-poll]").forEach((box) => {
  const tick = async () => {
    const live = box.querySelector("[data-active]");
    if (!live || live.dataset.active !== "true") return;
    try {
      const response = await fetch(box.dataset.poll, { headers: { "X-Requested-With": "poll" } });
      if (response.ok) {
        box.innerHTML = await response.text();
        const now = box.querySelector("[data-active]");
        if (box.dataset.reloadWhenDone && now && now.dataset.active !== "true") {
          window.location.reload();
          return;
        }
      }
    } catch (err) {
      // A missed poll is retried on the next tick.
    }
    setTimeout(tick, 2000);
  };
  setTimeout(tick, 2000);
});
