function compare(x, y) {  // numbers numerically, text naturally; empty values are compared by the caller
  const a = Number(x), b = Number(y);
  return isNaN(a) || isNaN(b) ? x.localeCompare(y, undefined, {numeric: true}) : a - b;
}
function sortable(table) {  // a click on a header sorts by its cells' data-v, first in its data-first order
  const body = table.tBodies[0], heads = [...table.tHead.rows[0].cells];
  heads.forEach((th, i) => th.addEventListener('click', () => {
    const first = th.dataset.first, other = first === 'ascending' ? 'descending' : 'ascending';
    const order = th.getAttribute('aria-sort') === first ? other : first, sign = order === 'ascending' ? 1 : -1;
    heads.forEach(h => h.removeAttribute('aria-sort'));
    th.setAttribute('aria-sort', order);
    const rows = [...body.rows].sort((a, b) => {
      const x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
      return x === '' || y === '' ? (x === '') - (y === '') : sign * compare(x, y);  // missing values last
    });
    body.append(...rows);
  }));
}
document.querySelectorAll('table.sortable').forEach(sortable);
const plotGroup = document.getElementById('plot-group');  // many datasets: one figure per question, a group chosen
if (plotGroup) plotGroup.addEventListener('change', () => {
  for (const g of document.querySelectorAll('.plot-group')) g.hidden = g.dataset.group !== plotGroup.value;
});
const board = document.getElementById('board');  // none on a page of `benchbone select` outputs alone
if (board) leaderboard(board);
function leaderboard(table) {  // the leaderboard's columns, filters and per-cell views
  const body = table.tBodies[0], heads = [...table.tHead.rows[0].cells];
  const hidden = document.createElement('style');  // hidden columns: one nth-child rule each
  document.head.append(hidden);
  const boxes = [...document.querySelectorAll('#columns input[data-column]')];
  function applyColumns() {
    const names = heads.map(th => th.dataset.column);
    hidden.textContent = boxes.filter(b => !b.checked).map(b => names.indexOf(b.dataset.column) + 1)
      .map(n => `#board tr > :nth-child(${n}) {display: none}`).join('\n');
  }
  boxes.forEach(b => b.addEventListener('change', applyColumns));
  applyColumns();
  const search = document.getElementById('search'), selects = [...document.querySelectorAll('[data-filter]')];
  function applyFilters() {
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    for (const tr of body.rows) {
      const text = [tr.dataset.backbone, tr.dataset.dataset, tr.dataset.strategy].join(' ').toLowerCase();
      tr.hidden = !(selects.every(s => !s.value || tr.dataset[s.dataset.filter] === s.value) && text.includes(q));
      shown += !tr.hidden;
    }
    document.getElementById('shown').textContent = `${shown} of ${body.rows.length} rows`;
  }
  search.addEventListener('input', applyFilters);
  selects.forEach(s => s.addEventListener('change', applyFilters));
  applyFilters();

  const cells = JSON.parse(document.getElementById('cells').textContent);
  const picker = document.getElementById('cell-select'), view = document.getElementById('cell-view');
  const esc = s => String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
  function showCell(id) {
    const c = cells.find(c => c.id === id);
    picker.value = id;
    let out = `<p><b>${esc(c.label)}</b>: ${esc(c.status)}` + (c.error ? ` <span class="error">${esc(c.error)}</span>` : '')
      + '</p><p>' + Object.entries(c.metrics).map(([k, v]) => `${esc(k)} ${v === null ? '-' : v.toFixed(4)}`).join(', ') + '</p>';
    if (c.confusion) {
      const small = c.classes.length <= 20;
      out += '<h3>Confusion matrix (rows: true class, columns: predicted)</h3><table id="confusion" class="' + (small ? '' : 'big') + '"><tr><th></th>'
        + c.classes.map(k => `<th title="${esc(k)}">${small ? esc(k) : ''}</th>`).join('') + '</tr>'
        + c.confusion.map((row, i) => {
          const total = row.reduce((a, b) => a + b, 0) || 1;
          return `<tr><th>${esc(c.classes[i])}</th>` + row.map((n, j) => `<td style="background:rgba(${i === j ? '75,121,168' : '217,95,2'},${(n / total).toFixed(3)})" title="true ${esc(c.classes[i])}, predicted ${esc(c.classes[j])}: ${n}">${small ? n : ''}</td>`).join('') + '</tr>';
        }).join('') + '</table>';
    }
    const perClass = c.per_class || (c.confusion && c.confusion.map((row, i) => {
      const support = row.reduce((a, b) => a + b, 0);
      return {class: c.classes[i], support, accuracy: support ? row[i] / support : null};
    }));
    if (perClass) {
      out += '<h3>Per-class accuracy</h3><table id="per-class"><tr><th>class</th><th>support</th><th>accuracy %</th><th></th></tr>'
        + perClass.map(p => `<tr><td>${esc(p.class)}</td><td class="n">${p.support}</td><td class="n">${p.accuracy === null ? '-' : (100 * p.accuracy).toFixed(2)}</td><td><div class="bar" style="width:${p.accuracy === null ? 0 : 200 * p.accuracy}px"></div></td></tr>`).join('') + '</table>';
    }
    if (!c.confusion && !perClass) out += '<p class="note">No confusion matrix or per-class accuracy was recorded for this cell.</p>';
    view.innerHTML = out;
  }
  picker.append(...cells.map(c => new Option(c.label + (c.status !== 'ok' ? ' (failed)' : ''), c.id)));
  if (cells.length) {
    picker.addEventListener('change', () => showCell(picker.value));
    showCell((cells.find(c => c.confusion) || cells[0]).id);
    for (const tr of body.rows) tr.addEventListener('dblclick', () => {
      const key = tr.dataset.key, c = cells.find(c => JSON.stringify(c.key) === key);
      if (c) { showCell(c.id); view.scrollIntoView(); }
    });
  }
}
