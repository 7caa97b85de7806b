// The web UI's only script: the Copy button of a one-time reveal. Everything else works without it
// (the pages' Content-Security-Policy allows scripts from this site only, never inline ones).
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  try {
    await navigator.clipboard.writeText(field.value);
  } catch {
    field.select();
    document.execCommand("copy");
  }
  button.textContent = "Copied";
});
