// The tls-tunnel dashboard: polls /api/stats and /api/history, renders with textContent
// only (every name in the data comes from a peer), no framework, no network but this origin.
'use strict';
(function () {
  var POLL_MS = 2000;
  var WINDOW_S = 900;
  var RATE_AVG_S = 5;
  var TOKEN_KEY = 'tls-tunnel.stats_token';
  var $ = function (id) { return document.getElementById(id); };
  var body = document.body;

  var token = sessionStorage.getItem(TOKEN_KEY) || '';
  var timer = null;
  var busy = false;
  var totals = [];        // [t, in/s, out/s, streams], oldest first
  var lastT = 0;
  var selected = null;    // {key, name} of the proxy whose history is open
  var selPoints = [];
  var selT = 0;
  var prevBytes = new Map(); // key -> [[ms, in, out], ...] of the polls in the rate window
  var rates = new Map();     // key -> [in/s, out/s]
  var lastStats = null;
  var sortBy = {};        // table id -> {col, dir}
  var filter = '';

  // ---- formatting --------------------------------------------------------------------
  var UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  function bytes(n) {
    n = Number(n) || 0;
    var i = 0;
    while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + UNITS[i];
  }
  function rate(n) { return bytes(n) + '/s'; }
  function ago(unix) {
    if (!unix) return '–';
    var s = Math.max(0, Math.round(Date.now() / 1000 - unix));
    if (s < 60) return s + 's ago';
    var m = Math.floor(s / 60);
    if (m < 60) return m + 'm ago';
    var h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + (m % 60) + 'm ago';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h ago';
  }
  function clock(unix) { return unix ? new Date(unix * 1000).toLocaleString() : '–'; }
  function setNum(id, v, text) {
    var el = $(id);
    el.dataset.value = String(Math.round(v || 0));
    el.textContent = text;
  }

  // ---- state and fetching ------------------------------------------------------------
  function setState(s) {
    body.dataset.state = s;
    $('loading').hidden = s !== 'loading';
    $('login').hidden = s !== 'login';
    $('error').hidden = s !== 'error';
    // Keep the last data visible under an error: the operator still wants it.
    $('main').hidden = !(s === 'ready' || (s === 'error' && lastStats));
  }

  function AuthError() {}

  function api(path) {
    var headers = token ? { Authorization: 'Bearer ' + token } : {};
    return fetch(path, { headers: headers, cache: 'no-store', credentials: 'omit' }).then(function (r) {
      if (r.status === 401) throw new AuthError();
      if (!r.ok) {
        return r.text().then(function (t) { throw new Error(path + ': ' + r.status + ' ' + t.slice(0, 300)); });
      }
      return r.json();
    });
  }

  function showLogin(message) {
    stop();
    $('login-error').textContent = message;
    setState('login');
    $('token').focus();
  }

  function poll() {
    if (busy) return;
    busy = true;
    var stats;
    api('/api/stats').then(function (s) {
      stats = s;
      return api('/api/history' + (lastT ? '?since=' + lastT : ''));
    }).then(function (h) {
      mergePoints(totals, h.points);
      if (totals.length) lastT = totals[totals.length - 1][0];
      if (!selected) return null;
      var q = '/api/history?series=' + encodeURIComponent(selected.key) + (selT ? '&since=' + selT : '');
      return api(q);
    }).then(function (sh) {
      if (sh && selected && sh.series === selected.key) {
        mergePoints(selPoints, sh.points);
        if (selPoints.length) selT = selPoints[selPoints.length - 1][0];
      }
      render(stats);
      var now = Date.now();
      var u = $('updated');
      u.dataset.t = String(now);
      u.textContent = new Date(now).toLocaleTimeString();
      setState('ready');
    }).catch(failed).then(function () { busy = false; });
  }

  function failed(e) {
    if (e instanceof AuthError) {
      var had = token !== '';
      token = '';
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(had ? 'wrong token: check stats_token in the config' : '');
      return;
    }
    $('error').textContent = 'Cannot read the stats endpoint (' + (e && e.message ? e.message : e) +
      '); retrying every ' + POLL_MS / 1000 + ' s.';
    setState('error');
    // Keep trying: the process may be restarting. /api/auth again, the token may have changed.
    if (!timer) timer = setTimeout(function () { timer = null; start(); }, POLL_MS);
  }

  function mergePoints(into, pts) {
    if (!pts || !pts.length) return;
    var last = into.length ? into[into.length - 1][0] : 0;
    for (var i = 0; i < pts.length; i++) if (pts[i][0] > last) into.push(pts[i]);
    var cut = into[into.length - 1][0] - WINDOW_S;
    var drop = 0;
    while (drop < into.length && into[drop][0] <= cut) drop++;
    if (drop) into.splice(0, drop);
  }

  // Ask /api/auth first (it answers 200 either way): a 401 from /api/stats would show as an
  // error in the browser's console on every visit to a protected endpoint.
  function start() {
    stop();
    api('/api/auth').then(function (a) {
      if (!a.authorized) throw new AuthError();
      poll();
      timer = setInterval(function () { if (!document.hidden) poll(); }, POLL_MS);
    }).catch(failed);
  }
  function stop() { if (timer) { clearInterval(timer); clearTimeout(timer); } timer = null; }

  // ---- rates from successive polls ---------------------------------------------------
  // Over the same window as the rate cards (RATE_AVG_S), so a lone proxy's row and the
  // cards agree; one poll's difference alone is as bursty as one second of the chart.
  function updateRates(items) {
    var now = Date.now();
    var seen = new Map();
    items.forEach(function (it) {
      var hist = (prevBytes.get(it.key) || []).filter(function (s) { return now - s[0] <= RATE_AVG_S * 1000 + 500; });
      var first = hist[0];
      if (first && now > first[0]) {
        var dt = (now - first[0]) / 1000;
        rates.set(it.key, [Math.max(0, it.bytes_in - first[1]) / dt, Math.max(0, it.bytes_out - first[2]) / dt]);
      } else {
        rates.set(it.key, [0, 0]);
      }
      hist.push([now, it.bytes_in, it.bytes_out]);
      seen.set(it.key, hist);
    });
    prevBytes = seen;
    rates.forEach(function (_, k) { if (!seen.has(k)) rates.delete(k); });
  }
  function rateOf(key) { var r = rates.get(key); return r ? r[0] + r[1] : 0; }
  function rateText(key) {
    var r = rates.get(key) || [0, 0];
    return '↓' + rate(r[0]) + ' ↑' + rate(r[1]);
  }

  // ---- rendering ---------------------------------------------------------------------
  function published(p) {
    var parts = [];
    if (p.publish_port) parts.push(':' + p.publish_port);
    (p.domains || []).forEach(function (d) { parts.push(d); });
    if (p.subdomain) parts.push(p.subdomain + '.*');
    var locs = p.locations || [];
    if (locs.length) parts.push('paths ' + locs.join(' '));
    return parts.join(' ') || (p.type === 'stcp' || p.type === 'sudp' ? '(private)' : '–');
  }

  function render(s) {
    lastStats = s;
    var role = s.role === 'client' ? 'client' : 'server';
    body.dataset.role = role;
    $('role-label').textContent = role === 'server' ? 'server' : 'client ' + (s.id || '');
    var proxies = [], visitors = [], clients = [];
    if (role === 'server') {
      clients = s.clients || [];
      clients.forEach(function (c) {
        (c.proxies || []).forEach(function (p) {
          proxies.push(Object.assign({}, p, { key: p.key || c.id + '/' + p.name, owner: p.owner || c.id }));
        });
        (c.visitors || []).forEach(function (v) {
          visitors.push(Object.assign({}, v, { key: v.key || c.id + '/' + v.name, owner: c.id }));
        });
      });
    } else {
      proxies = (s.proxies || []).map(function (p) { return Object.assign({ key: p.name }, p); });
      visitors = (s.visitors || []).map(function (v) { return Object.assign({ key: 'visitor/' + v.name }, v); });
      renderSession(s);
    }
    updateRates(proxies.concat(visitors));
    var t = s.totals || {};
    var sum = function (list, f) { return list.reduce(function (a, x) { return a + (Number(x[f]) || 0); }, 0); };
    var all = proxies.concat(role === 'client' ? visitors : []);
    var bin = t.bytes_in != null ? t.bytes_in : sum(all, 'bytes_in');
    var bout = t.bytes_out != null ? t.bytes_out : sum(all, 'bytes_out');
    var streams = t.active_streams != null ? t.active_streams : sum(all, 'active_streams');
    var nclients = t.clients != null ? t.clients : clients.length;
    var nproxies = t.proxies != null ? t.proxies : proxies.length;
    setNum('total-clients', nclients, String(nclients));
    setNum('total-proxies', nproxies, String(nproxies));
    setNum('total-streams', streams, String(streams));
    setNum('bytes-in', bin, bytes(bin));
    setNum('bytes-out', bout, bytes(bout));
    // The cards average the last few seconds: socket buffers make one second's count bursty.
    var recent = totals.slice(-RATE_AVG_S);
    var avg = function (i) { return recent.length ? recent.reduce(function (a, p) { return a + p[i]; }, 0) / recent.length : 0; };
    setNum('rate-in', avg(1), rate(avg(1)));
    setNum('rate-out', avg(2), rate(avg(2)));

    renderCluster(role === 'server' ? s.cluster : null);
    fillTable('clients', clients, CLIENT_COLS, function (c) { return c.id; }, function (tr, c) {
      tr.dataset.id = c.id;
      tr.dataset.bytes = String((c.bytes_in || 0) + (c.bytes_out || 0));
    });
    fillTable('proxies', proxies, PROXY_COLS, function (p) { return p.key; }, function (tr, p) {
      tr.dataset.key = p.key;
      tr.dataset.name = p.name;
      tr.dataset.bytesIn = String(p.bytes_in || 0);
      tr.dataset.bytesOut = String(p.bytes_out || 0);
      tr.tabIndex = 0;
      tr.classList.toggle('selected', !!selected && selected.key === p.key);
    });
    fillTable('visitors', visitors, VISITOR_COLS, function (v) { return v.key; }, function (tr, v) { tr.dataset.key = v.key; });
    fillTable('events', s.events || [], EVENT_COLS, function (e) {
      return [e.kind, e.source, e.client, e.reason].join('\u0001');
    }, function (tr, e) { tr.dataset.kind = e.kind; });
    drawChart($('chart'), totals, 1);
    if (selected) drawChart($('history-chart'), selPoints, 5);
  }

  // A server of a cluster: the members as the registry lists them, this one's lease, the
  // peer link's traffic with each, the registry's health, and which server holds which client.
  function renderCluster(c) {
    var section = $('cluster');
    section.hidden = !c;
    if (!c) return;
    section.dataset.lease = c.lease || '';
    $('cluster-summary').textContent = 'this server: ' + (c.server_id || '?') + ' · lease ' + (c.lease || '?') +
      (c.draining ? ' · draining' : '') + ' · registry revision ' + (c.registry_revision || 0);
    renderEtcd(c.etcd);
    var peers = new Map();
    (c.peers || []).forEach(function (p) { peers.set(p.server_id, p); });
    var servers = (c.servers || []).map(function (m) {
      return Object.assign({ self: m.id === c.server_id, peer: peers.get(m.id) || null }, m);
    });
    // A peer that left the registry keeps its counts: listed after the members.
    peers.forEach(function (p, id) {
      if (!servers.some(function (m) { return m.id === id; })) servers.push({ id: id, gone: true, peer: p });
    });
    fillTable('servers', servers, SERVER_COLS, function (m) { return m.id; }, function (tr, m) {
      var p = m.peer || {};
      tr.dataset.id = m.id;
      tr.dataset.clients = String(m.clients || 0);
      tr.dataset.link = m.self ? '' : (p.state || 'idle');
      tr.dataset.streamsOut = String(p.streams_out || 0);
      tr.dataset.streamsIn = String(p.streams_in || 0);
      tr.dataset.bytesOut = String(p.bytes_out || 0);
      tr.dataset.bytesIn = String(p.bytes_in || 0);
      tr.classList.toggle('selected', !!m.self);
    });
    var placed = c.clients || [];
    var more = c.clients_truncated || 0;
    $('cluster-clients-summary').textContent = more
      ? placed.length + ' listed of ' + (placed.length + more) + ' (the first by id)'
      : placed.length + (placed.length === 1 ? ' client' : ' clients') + ' in the registry';
    fillTable('cluster-clients', placed, PLACE_COLS, function (p) { return p.id; }, function (tr, p) {
      tr.dataset.id = p.id;
      tr.dataset.server = p.server_id || '';
      tr.classList.toggle('selected', p.server_id === c.server_id);
    });
  }

  // The registry's health, when the server reports it (`cluster.etcd`).
  function renderEtcd(e) {
    var el = $('etcd-health');
    el.hidden = !e;
    if (!e) return;
    el.dataset.healthy = String(!!e.healthy);
    el.className = 'small ' + (e.healthy ? 'yes' : 'no');
    el.textContent = 'etcd: ' + (e.healthy ? 'healthy' : 'failing') + ' · ' + (e.requests || 0) + ' requests · ' +
      (e.failures || 0) + ' failures · ' + (e.writes || 0) + ' writes · ' + (e.keepalives || 0) + ' keep-alives' +
      (e.last_error ? ' · last error: ' + e.last_error : '');
  }

  function renderSession(s) {
    $('server-addr').textContent = s.server_addr || '–';
    var c = $('connected');
    c.textContent = s.connected ? 'yes' : 'no';
    c.className = s.connected ? 'yes' : 'no';
    setNum('connections', s.connections, String(s.connections || 0));
    $('connected-since').textContent = s.connected_since ? clock(s.connected_since) + ' (' + ago(s.connected_since) + ')' : '–';
    setNum('reconnects', s.reconnects, String(s.reconnects || 0));
    $('last-error').textContent = s.last_error || '–';
  }

  // Columns: [sort key, value for sorting, text, class]
  function col(key, val, text, cls) { return { key: key, val: val, text: text || function (r) { return String(val(r)); }, cls: cls || '' }; }
  var num = 'num';
  var CLIENT_COLS = [
    col('id', function (c) { return c.id; }),
    col('address', function (c) { return c.address; }),
    col('transport', function (c) { return c.transport; }),
    col('connections', function (c) { return c.connections || 0; }, null, num),
    col('since', function (c) { return c.connected_since || 0; }, function (c) { return ago(c.connected_since); }),
    col('proxies', function (c) { return (c.proxies || []).length; }, null, num),
    col('streams', function (c) { return c.active_streams || 0; }, null, num),
    col('bytes_in', function (c) { return c.bytes_in || 0; }, function (c) { return bytes(c.bytes_in); }, num),
    col('bytes_out', function (c) { return c.bytes_out || 0; }, function (c) { return bytes(c.bytes_out); }, num)
  ];
  var PROXY_COLS = [
    col('name', function (p) { return p.name; }),
    col('type', function (p) { return p.type || ''; }),
    col('where', published, null, 'wrap'),
    col('owner', function (p) { return p.owner || ''; }, null, 'server-only'),
    col('local', function (p) { return p.local_addr || ''; }, null, 'client-only'),
    col('active', function (p) { return p.active_streams || 0; }, null, num),
    col('total', function (p) { return p.connections_total != null ? p.connections_total : (p.connections || 0); }, null, num),
    col('bytes_in', function (p) { return p.bytes_in || 0; }, function (p) { return bytes(p.bytes_in); }, num),
    col('bytes_out', function (p) { return p.bytes_out || 0; }, function (p) { return bytes(p.bytes_out); }, num),
    col('rate', function (p) { return rateOf(p.key); }, function (p) { return rateText(p.key); }, num)
  ];
  // The server counts a visitor's traffic on the proxy it visits: '–' where a field is absent.
  var opt = function (f, fmt) { return function (v) { return v[f] == null ? '–' : (fmt ? fmt(v[f]) : String(v[f])); }; };
  var VISITOR_COLS = [
    col('name', function (v) { return v.name; }),
    col('proxy', function (v) { return v.proxy || ''; }),
    col('where', function (v) { return v.bind || (v.publish_port ? ':' + v.publish_port : 'private'); }),
    col('owner', function (v) { return v.owner || ''; }, null, 'server-only'),
    col('active', function (v) { return v.active_streams || 0; }, opt('active_streams'), num),
    col('total', function (v) { return v.connections || 0; }, opt('connections'), num),
    col('bytes_in', function (v) { return v.bytes_in || 0; }, opt('bytes_in', bytes), num),
    col('bytes_out', function (v) { return v.bytes_out || 0; }, opt('bytes_out', bytes), num),
    col('rate', function (v) { return rateOf(v.key); }, function (v) { return v.bytes_in == null ? '–' : rateText(v.key); }, num)
  ];
  // A peer's counts, '–' on this server's own row (no link to itself).
  var link = function (f, fmt) {
    return function (m) { return m.self ? '–' : (fmt || String)((m.peer && m.peer[f]) || 0); };
  };
  var linkVal = function (f) { return function (m) { return (m.peer && m.peer[f]) || 0; }; };
  function failures(m) {
    var f = (m.peer && m.peer.failures) || {};
    var parts = Object.keys(f).filter(function (k) { return f[k] > 0; }).sort().map(function (k) { return k + ' ' + f[k]; });
    return m.self ? '–' : parts.join(', ') || '0';
  }
  var SERVER_COLS = [
    col('id', function (m) { return m.id; }, function (m) { return m.self ? m.id + ' (this one)' : m.id; }),
    col('peer', function (m) { return m.peer_addr || ''; }),
    col('state', function (m) { return m.gone ? 'left' : m.draining ? 'draining' : 'serving'; }),
    col('clients', function (m) { return m.clients || 0; }, function (m) { return m.gone ? '–' : String(m.clients || 0); }, num),
    col('link', function (m) { return m.self ? '' : (m.peer && m.peer.state) || 'idle'; }, function (m) { return m.self ? '–' : (m.peer && m.peer.state) || 'idle'; }),
    col('streams_out', linkVal('streams_out'), link('streams_out'), num),
    col('streams_in', linkVal('streams_in'), link('streams_in'), num),
    col('bytes_out', linkVal('bytes_out'), link('bytes_out', bytes), num),
    col('bytes_in', linkVal('bytes_in'), link('bytes_in', bytes), num),
    col('failures', function (m) { return failures(m); })
  ];
  var PLACE_COLS = [
    col('id', function (p) { return p.id; }),
    col('server', function (p) { return p.server_id || ''; })
  ];
  var EVENT_COLS = [
    col('t', function (e) { return e.t; }, function (e) { return clock(e.t); }),
    col('kind', function (e) { return e.kind; }),
    col('source', function (e) { return e.source || ''; }),
    col('client', function (e) { return e.client || ''; }),
    col('reason', function (e) { return e.reason || ''; }, null, 'wrap'),
    col('count', function (e) { return e.count || 1; }, null, num)
  ];

  // Rows are kept and updated in place by key, not rebuilt: a row the user (or a WebDriver
  // test) holds stays the same element across polls.
  function fillTable(id, rows, cols, rowKey, decorate) {
    var table = $(id);
    var sort = sortBy[id];
    if (sort) {
      var c = cols.filter(function (x) { return x.key === sort.col; })[0];
      if (c) {
        rows = rows.slice().sort(function (a, b) {
          var x = c.val(a), y = c.val(b);
          var r = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
          return sort.dir * r;
        });
      }
    }
    var tbody = table.tBodies[0];
    var old = new Map();
    Array.prototype.forEach.call(tbody.rows, function (tr) { old.set(tr.rowKey, tr); });
    var used = new Set();
    var order = [];
    var shown = 0;
    rows.forEach(function (r) {
      var k = String(rowKey(r));
      while (used.has(k)) k += '\u0000';
      used.add(k);
      var tr = old.get(k);
      old.delete(k);
      if (!tr) {
        tr = document.createElement('tr');
        tr.rowKey = k;
        cols.forEach(function (c) {
          var td = document.createElement('td');
          if (c.cls) td.className = c.cls;
          tr.appendChild(td);
        });
      }
      var text = [];
      cols.forEach(function (c, i) {
        var t = c.text(r);
        if (tr.cells[i].textContent !== t) tr.cells[i].textContent = t;
        text.push(t);
      });
      decorate(tr, r);
      var hay = (text.join(' ') + ' ' + k).toLowerCase();
      tr.hidden = filter !== '' && hay.indexOf(filter) < 0;
      if (!tr.hidden) shown++;
      order.push(tr);
    });
    old.forEach(function (tr) { tr.remove(); });
    order.forEach(function (tr) { tbody.appendChild(tr); });
    if (!shown) {
      var tr = document.createElement('tr');
      tr.rowKey = '\u0000empty';
      var td = document.createElement('td');
      td.colSpan = cols.filter(function (c) { return c.cls.indexOf('-only') < 0 || c.cls.indexOf(body.dataset.role) === 0; }).length;
      td.className = 'empty';
      td.textContent = rows.length ? 'nothing matches the filter' : 'none';
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      var k = th.dataset.sort;
      if (sort && k === sort.col) th.setAttribute('aria-sort', sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    });
  }

  // ---- chart -------------------------------------------------------------------------
  function niceMax(v) {
    if (v <= 0) return 1024;
    var p = Math.pow(1024, Math.floor(Math.log(v) / Math.log(1024)));
    var m = v / p;
    var steps = [1, 2, 4, 5, 8, 10, 20, 40, 50, 80, 100, 200, 400, 500, 800, 1024];
    for (var i = 0; i < steps.length; i++) if (m <= steps[i]) return steps[i] * p;
    return 1024 * p;
  }

  function drawChart(canvas, pts, step) {
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || 600, h = canvas.clientHeight || 200;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    var g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    var css = getComputedStyle(document.documentElement);
    var fg = css.getPropertyValue('--muted') || '#666';
    var line = css.getPropertyValue('--line') || '#ccc';
    var now = pts.length ? pts[pts.length - 1][0] : Math.floor(Date.now() / 1000);
    var from = now - WINDOW_S;
    var shown = pts.filter(function (p) { return p[0] > from; });
    var max = 0;
    shown.forEach(function (p) { max = Math.max(max, p[1], p[2]); });
    canvas.dataset.points = String(shown.length);
    canvas.dataset.max = String(Math.round(max));
    var top = niceMax(max);
    var L = 70, R = 10, T = 10, B = 22;
    var pw = w - L - R, ph = h - T - B;
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = fg;
    g.strokeStyle = line;
    g.lineWidth = 1;
    g.textBaseline = 'middle';
    g.textAlign = 'right';
    for (var i = 0; i <= 4; i++) {
      var y = T + ph - (ph * i) / 4;
      g.beginPath(); g.moveTo(L, y); g.lineTo(L + pw, y); g.stroke();
      g.fillText(rate((top * i) / 4), L - 6, y);
    }
    g.textAlign = 'center';
    g.textBaseline = 'top';
    [15, 10, 5, 0].forEach(function (m) {
      var x = L + pw * (1 - (m * 60) / WINDOW_S);
      g.fillText(m ? '-' + m + ' min' : 'now', Math.min(x, w - 20), T + ph + 6);
    });
    if (!shown.length) {
      g.textBaseline = 'middle';
      g.fillText('no data yet: the first point comes ' + step + ' s after start', L + pw / 2, T + ph / 2);
      return;
    }
    [[1, '--in'], [2, '--out']].forEach(function (s) {
      g.strokeStyle = css.getPropertyValue(s[1]) || '#36c';
      g.lineWidth = 1.5;
      g.beginPath();
      shown.forEach(function (p, j) {
        var x = L + pw * ((p[0] - from) / WINDOW_S);
        var y = T + ph - ph * (p[s[0]] / top);
        if (j) g.lineTo(x, y); else g.moveTo(x, y);
      });
      if (shown.length === 1) g.lineTo(L + pw, T + ph - ph * (shown[0][s[0]] / top));
      g.stroke();
    });
    var hx = canvas.hoverX;
    if (hx == null || hx < L || hx > L + pw) return;
    // The point nearest the pointer, with its time and both rates.
    var t = from + ((hx - L) / pw) * WINDOW_S;
    var near = shown.reduce(function (a, p) { return Math.abs(p[0] - t) < Math.abs(a[0] - t) ? p : a; });
    var x = L + pw * ((near[0] - from) / WINDOW_S);
    g.strokeStyle = fg;
    g.lineWidth = 1;
    g.beginPath(); g.moveTo(x, T); g.lineTo(x, T + ph); g.stroke();
    var label = new Date(near[0] * 1000).toLocaleTimeString() + '  in ' + rate(near[1]) + '  out ' + rate(near[2]);
    g.textBaseline = 'top';
    g.textAlign = x > L + pw / 2 ? 'right' : 'left';
    g.fillStyle = css.getPropertyValue('--fg') || '#000';
    g.fillText(label, x + (x > L + pw / 2 ? -6 : 6), T + 2);
  }

  function hoverable(canvas, redraw) {
    canvas.addEventListener('mousemove', function (ev) {
      canvas.hoverX = ev.clientX - canvas.getBoundingClientRect().left;
      redraw();
    });
    canvas.addEventListener('mouseleave', function () { canvas.hoverX = null; redraw(); });
  }
  hoverable($('chart'), function () { drawChart($('chart'), totals, 1); });
  hoverable($('history-chart'), function () { drawChart($('history-chart'), selPoints, 5); });

  // ---- interaction -------------------------------------------------------------------
  function openHistory(key, name) {
    if (!selected || selected.key !== key) { selPoints = []; selT = 0; }
    selected = { key: key, name: name };
    $('history-title').textContent = 'History of ' + name + ' (' + key + '), 5 s steps';
    $('history').hidden = false;
    drawChart($('history-chart'), selPoints, 5);
    poll();
    $('history').scrollIntoView({ block: 'nearest' });
  }

  $('proxies').tBodies[0].addEventListener('click', function (ev) {
    var tr = ev.target.closest('tr');
    if (tr && tr.dataset.key) openHistory(tr.dataset.key, tr.dataset.name);
  });
  $('proxies').tBodies[0].addEventListener('keydown', function (ev) {
    var tr = ev.target.closest('tr');
    if (tr && tr.dataset.key && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); openHistory(tr.dataset.key, tr.dataset.name); }
  });
  $('history-close').addEventListener('click', function () {
    selected = null;
    $('history').hidden = true;
    if (lastStats) render(lastStats);
  });
  Array.prototype.forEach.call(document.querySelectorAll('table'), function (table) {
    var sortOn = function (th) {
      var cur = sortBy[table.id];
      sortBy[table.id] = { col: th.dataset.sort, dir: cur && cur.col === th.dataset.sort ? -cur.dir : 1 };
      if (lastStats) render(lastStats);
    };
    Array.prototype.forEach.call(table.querySelectorAll('th[data-sort]'), function (th) { th.tabIndex = 0; });
    table.tHead.addEventListener('click', function (ev) {
      var th = ev.target.closest('th[data-sort]');
      if (th) sortOn(th);
    });
    table.tHead.addEventListener('keydown', function (ev) {
      var th = ev.target.closest('th[data-sort]');
      if (th && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); sortOn(th); }
    });
  });
  $('filter').addEventListener('input', function () {
    filter = this.value.trim().toLowerCase();
    if (lastStats) render(lastStats);
  });
  $('login').addEventListener('submit', function (ev) {
    ev.preventDefault();
    token = $('token').value;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    $('login-error').textContent = '';
    setState('loading');
    start();
  });
  document.addEventListener('visibilitychange', function () { if (!document.hidden && timer) poll(); });
  window.addEventListener('resize', function () {
    drawChart($('chart'), totals, 1);
    if (selected) drawChart($('history-chart'), selPoints, 5);
  });

  setState('loading');
  start();
})();
