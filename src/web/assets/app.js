// Progress feedback only: the pages work without it.
// A form marked data-busy shows its "working" note and disables its buttons once submitted.
document.querySelectorAll('form[data-busy]').forEach((f) => f.addEventListener('submit', () => {
  f.classList.add('working');
  f.querySelectorAll('button').forEach((b) => { b.disabled = true; });
}));
// Opening a record runs an access transaction and gathers shares: say so.
document.querySelectorAll('a[data-open]').forEach((a) => a.addEventListener('click', () => {
  a.textContent = 'Opening… (access check, gathering shares)';
}));
