// The console's entry point: hash routing between the queries page (#/) and a query's page
// (#/query/ID), the connection line, and the "forget token" button.

import { forgetToken, token } from "./api.js";
import { queriesPage } from "./queries.js";
import { queryPage } from "./query.js";

const main = document.getElementById("main");
const connection = document.getElementById("connection");
const forget = document.getElementById("forget-token");

const ctx = {
  connection(text) {
    if (connection.textContent !== text) connection.textContent = text;
  },
};

let leave = null;

function route() {
  if (leave) leave();
  ctx.connection("");
  const hash = location.hash.replace(/^#/, "");
  const match = hash.match(/^\/query\/(.+)$/);
  if (match) {
    const id = decodeURIComponent(match[1]);
    document.title = `${id} · liveresults console`;
    leave = queryPage(main, ctx, id);
  } else {
    document.title = "Queries · liveresults console";
    leave = queriesPage(main, ctx);
  }
  // Move focus to the new page's content for keyboard and screen-reader users, but not on
  // the first load (the browser's own focus handling is right there).
  if (routed) main.focus();
  routed = true;
}

let routed = false;
forget.hidden = !token();
forget.addEventListener("click", () => {
  forgetToken();
  forget.hidden = true;
  route();
});
window.addEventListener("hashchange", route);
route();
