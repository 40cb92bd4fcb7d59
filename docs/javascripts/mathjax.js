// MathJax 3 settings for pymdownx.arithmatex (generic mode); MathJax itself is served from
// assets/mathjax/ (copied into the site at build time, no network needed).
window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true,
        processEnvironments: true},
  options: {ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex"},
  loader: {paths: {mathjax: new URL("../assets/mathjax", document.currentScript.src).href}},
  chtml: {fontURL: new URL("../assets/mathjax/output/chtml/fonts/woff-v2", document.currentScript.src).href}
};
