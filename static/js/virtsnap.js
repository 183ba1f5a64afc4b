// Virtsnap's small enhancements. Every page works without this file: it adds
// collapsible tree branches and arrow keys, local times, the confirmation
// dialog, and refreshes the VM page when an operation starts or ends.
(function () {
  "use strict";

  // --- Snapshot tree: collapse branches (the list is flat, levels in aria-level) ---

  function level(item) {
    return parseInt(item.getAttribute("aria-level"), 10);
  }

  function items(tree) {
    return Array.prototype.slice.call(tree.querySelectorAll('[role="treeitem"]'));
  }

  function storageKey(tree) {
    return "virtsnap-collapsed-" + tree.dataset.vm;
  }

  function loadCollapsed(tree) {
    try {
      return new Set(JSON.parse(sessionStorage.getItem(storageKey(tree)) || "[]"));
    } catch (e) {
      return new Set();
    }
  }

  function saveCollapsed(tree) {
    const ids = items(tree)
      .filter((item) => item.getAttribute("aria-expanded") === "false")
      .map((item) => item.id);
    try {
      sessionStorage.setItem(storageKey(tree), JSON.stringify(ids));
    } catch (e) {
      /* private mode: collapsing still works, it is just not remembered */
    }
  }

  // Show every item whose ancestors are all expanded, hide the others.
  function layout(tree) {
    let hideBelow = Infinity; // hide items deeper than this level
    for (const item of items(tree)) {
      const lvl = level(item);
      if (lvl <= hideBelow) {
        hideBelow = Infinity;
        item.hidden = false;
        if (item.getAttribute("aria-expanded") === "false") hideBelow = lvl;
      } else {
        item.hidden = true;
      }
    }
  }

  function setExpanded(item, expanded) {
    if (!item.hasAttribute("aria-expanded")) return;
    item.setAttribute("aria-expanded", expanded ? "true" : "false");
    const toggle = item.querySelector("[data-toggle]");
    if (toggle) {
      const name = item.querySelector(".node-name").textContent;
      const below = item.querySelector("[data-below]");
      toggle.setAttribute("aria-label", (expanded ? "Collapse " : "Expand ") + name + (below ? " (" + below.textContent + ")" : ""));
    }
  }

  function initTree(tree) {
    const collapsed = loadCollapsed(tree);
    for (const item of items(tree)) {
      const toggle = item.querySelector("[data-toggle]");
      if (toggle) toggle.hidden = false;
      setExpanded(item, !collapsed.has(item.id));
    }
    layout(tree);
    // One item takes part in the Tab order: the current one, else the first.
    const current = tree.querySelector('[aria-current="true"]:not([hidden])') || tree.querySelector('[role="treeitem"]');
    for (const item of items(tree)) item.tabIndex = item === current ? 0 : -1;
    const page = tree.closest(".vm-page") || document;
    page.querySelectorAll("[data-tree-expand], [data-tree-collapse]").forEach((b) => (b.hidden = false));
  }

  function revealItem(tree, target) {
    // Expand every ancestor of target, so a jump or focus lands on a visible item.
    let lvl = level(target);
    const all = items(tree);
    for (let i = all.indexOf(target) - 1; i >= 0 && lvl > 1; i--) {
      if (level(all[i]) < lvl) {
        setExpanded(all[i], true);
        lvl = level(all[i]);
      }
    }
    layout(tree);
    saveCollapsed(tree);
  }

  function focusItem(tree, item) {
    for (const other of items(tree)) other.tabIndex = -1;
    item.tabIndex = 0;
    item.focus();
  }

  document.addEventListener("click", function (event) {
    const toggle = event.target.closest("[data-toggle]");
    if (toggle) {
      const item = toggle.closest('[role="treeitem"]');
      const tree = item.closest('[role="tree"]');
      setExpanded(item, item.getAttribute("aria-expanded") === "false");
      layout(tree);
      saveCollapsed(tree);
      return;
    }
    const all = event.target.closest("[data-tree-expand], [data-tree-collapse]");
    if (all) {
      const tree = document.getElementById("snapshot-tree");
      if (!tree) return;
      const expand = all.hasAttribute("data-tree-expand");
      for (const item of items(tree)) setExpanded(item, expand);
      layout(tree);
      saveCollapsed(tree);
      return;
    }
    const jump = event.target.closest("a.jump");
    if (jump) {
      const target = document.querySelector(jump.getAttribute("href"));
      const tree = target && target.closest('[role="tree"]');
      if (tree) {
        event.preventDefault();
        revealItem(tree, target);
        target.scrollIntoView({ block: "center" });
        focusItem(tree, target);
      }
    }
  });

  // Escape leaves an edit in place, like Cancel.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    const form = event.target.closest && event.target.closest('[role="treeitem"] .edit-form');
    const cancel = form && form.querySelector("[data-cancel]");
    if (cancel) {
      event.preventDefault();
      cancel.click();
    }
  });

  // Arrow keys on tree items (the WAI-ARIA tree pattern); Tab still reaches the buttons.
  document.addEventListener("keydown", function (event) {
    const item = event.target;
    if (!item.matches || !item.matches('[role="treeitem"]')) return;
    const tree = item.closest('[role="tree"]');
    const visible = items(tree).filter((i) => !i.hidden);
    const at = visible.indexOf(item);
    let next = null;
    switch (event.key) {
      case "ArrowDown":
        next = visible[at + 1];
        break;
      case "ArrowUp":
        next = visible[at - 1];
        break;
      case "Home":
        next = visible[0];
        break;
      case "End":
        next = visible[visible.length - 1];
        break;
      case "ArrowRight":
        if (item.getAttribute("aria-expanded") === "false") {
          setExpanded(item, true);
          layout(tree);
          saveCollapsed(tree);
        } else if (item.hasAttribute("aria-expanded")) {
          next = visible[at + 1];
        }
        break;
      case "ArrowLeft":
        if (item.getAttribute("aria-expanded") === "true") {
          setExpanded(item, false);
          layout(tree);
          saveCollapsed(tree);
        } else {
          for (let i = at - 1; i >= 0; i--) {
            if (level(visible[i]) < level(item)) {
              next = visible[i];
              break;
            }
          }
        }
        break;
      default:
        return;
    }
    event.preventDefault();
    if (next) focusItem(tree, next);
  });

  // --- Times: shown in the browser's time zone; the exact ISO time stays on hover ---

  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const clockFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

  // Until an element is marked data-local the stylesheet keeps it hidden, so the
  // server's zone never shows, not even for the frame between a swap and htmx's load.
  function localTime(el) {
    const date = new Date(el.getAttribute("datetime"));
    if (!isNaN(date)) {
      const clockOnly = el.closest(".task-title");
      el.textContent = (clockOnly ? clockFormat : timeFormat).format(date);
      el.title = el.getAttribute("datetime");
    }
    el.dataset.local = "";
  }

  function localTimes(root) {
    if (root.matches && root.matches("time[datetime]:not([data-local])")) localTime(root);
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(localTime);
  }

  // Every <time> the page gains (an htmx swap, a poll) is rewritten before it is painted:
  // mutation observers run before the browser draws the next frame.
  new MutationObserver(function (mutations) {
    for (const mutation of mutations) {
      for (const node of mutation.addedNodes) {
        if (node.nodeType === Node.ELEMENT_NODE) localTimes(node);
      }
    }
  }).observe(document.documentElement, { childList: true, subtree: true });
  localTimes(document);

  // --- The confirmation dialog: filled by htmx, then opened ---

  document.addEventListener("click", function (event) {
    const close = event.target.closest("[data-dialog-close]");
    const dialog = close && close.closest("dialog");
    if (dialog) {
      event.preventDefault();
      dialog.close();
    }
  });

  // --- The VM page: refresh it when an operation starts or ends ---

  let refreshing = false;
  let pending = null;
  const ended = new Set();

  function busyEditing(page) {
    const dialog = page.querySelector("dialog[open]");
    return Boolean(dialog || page.querySelector(".edit-form"));
  }

  function refreshPage(task) {
    const page = document.getElementById("vm-page");
    if (!page) return;
    if (refreshing || busyEditing(page)) {
      pending = task || pending || 0; // after the user is done
      return;
    }
    refreshing = true;
    pending = null;
    // Keep what the user typed in the snapshot form.
    const typed = {};
    page.querySelectorAll(".take input[name], .take textarea[name]").forEach((el) => (typed[el.name] = el.value));
    let url = page.dataset.refreshUrl;
    if (task) url += "?task=" + task;
    htmx.ajax("GET", url, { target: "#vm-page", swap: "outerHTML" }).finally(function () {
      refreshing = false;
      const fresh = document.getElementById("vm-page");
      if (fresh) {
        fresh.querySelectorAll(".take input[name], .take textarea[name]").forEach(function (el) {
          if (!el.value && typed[el.name]) el.value = typed[el.name];
        });
      }
      if (pending !== null) refreshPage(pending);
    });
  }

  document.body.addEventListener("vs-task-ended", function (event) {
    const task = event.detail && event.detail.task;
    if (ended.has(task)) return;
    ended.add(task);
    refreshPage(task);
  });
  document.body.addEventListener("vs-task-started", function () {
    refreshPage(null);
  });
  document.addEventListener("close", function (event) {
    if (event.target.matches && event.target.matches("dialog") && pending !== null) refreshPage(pending);
  }, true);

  // --- Errors that htmx does not swap (5xx, network): say so where people look ---

  function showError(text) {
    const box = document.getElementById("messages");
    if (!box) return;
    const p = document.createElement("p");
    p.className = "msg msg-error";
    p.textContent = "✖ " + text;
    box.appendChild(p);
  }

  document.body.addEventListener("htmx:responseError", function (event) {
    const xhr = event.detail.xhr;
    let reason = "";
    try {
      const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      const alert = doc.querySelector('[role="alert"]');
      reason = alert ? alert.textContent.trim() : "";
    } catch (e) {
      /* not HTML */
    }
    showError(reason || "The server answered " + xhr.status + ". Reload the page and try again.");
  });
  document.body.addEventListener("htmx:sendError", function () {
    showError("The server cannot be reached. Check the connection, then reload the page.");
  });

  // A session that ended answers a poll with the login page: go there, not into the page.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    const url = event.detail.xhr.responseURL;
    if (url && new URL(url).pathname === "/login/" && location.pathname !== "/login/") {
      event.detail.shouldSwap = false;
      location.reload();
    }
  });

  // --- Every new piece of page (first load and htmx swaps) ---

  function init(root) {
    localTimes(root);
    const tree = root.id === "snapshot-tree" ? root : root.querySelector("#snapshot-tree");
    if (tree) initTree(tree);
    else if (root.matches && root.matches('[role="treeitem"]')) {
      // One item swapped (edit in place): keep its branch state.
      const parentTree = root.closest('[role="tree"]');
      if (parentTree) {
        const toggle = root.querySelector("[data-toggle]");
        if (toggle) toggle.hidden = false;
        setExpanded(root, !loadCollapsed(parentTree).has(root.id));
        layout(parentTree);
        if (pending !== null && !busyEditing(document)) refreshPage(pending);
      }
    }
    const body = root.id === "dialog-body" ? root : null;
    if (body && body.children.length) {
      const dialog = body.closest("dialog");
      if (!dialog.open) dialog.showModal();
    }
  }

  htmx.onLoad(init);
  document.body.addEventListener("htmx:afterSwap", function (event) {
    // Content swapped *into* the dialog body: htmx.onLoad sees the children, not the body.
    if (event.detail.target.id === "dialog-body") init(event.detail.target);
  });
})();
