// The pages links in mail open: /signup/verify?token=... and /reset?token=...
// Nothing happens on opening (mail scanners open links too): the person
// confirms with a button, or sets a password.
"use strict";
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token") || "";

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let answer = {};
  try { answer = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error(answer.error || r.statusText);
  return answer.message || "Done.";
}

function say(text) { $("link-message").textContent = text; }

document.addEventListener("DOMContentLoaded", () => {
  const verifying = location.pathname.startsWith("/signup/verify");
  const form = verifying ? $("verify-form") : $("reset-form");
  form.hidden = false;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      if (verifying) {
        say(await post("/api/signup/verify", { token }));
      } else {
        if ($("reset-password").value !== $("reset-again").value) { say("The two passwords differ."); return; }
        say(await post("/api/reset", { token, password: $("reset-password").value }));
      }
      form.hidden = true;
    } catch (e) {
      say(e.message);
    }
  });
});
