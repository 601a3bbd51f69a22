// tools/dsv4/svg.h — the pieces every `--plot FILE.svg` of the dsv4 commands shares.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/units.h"

namespace dsv4::cli {

// Text for an SVG/XML text node or attribute: & < > " ' escaped, control bytes XML 1.0 cannot
// carry dropped (tab kept).
inline std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t') out += c;
    }
  }
  return out;
}

// The XML declaration, the <svg> element (width x height, sans-serif 13) and a white background.
inline std::string svg_begin(double width, double height) {
  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"13\">\n",
      width, height);
  o += fmt::format("<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"white\"/>\n", width,
                   height);
  return o;
}

// Grid, frame and tick labels of a log-log plot area [L, L + pw] x [T, T + ph]: x ticks at the
// powers of two in [xmin, xmax] (every step-th, at most 11, labelled by format_count), y ticks
// at the decades 10^ly0 .. 10^ly1, labelled by y_label(value, exponent). px, py map data
// coordinates to pixels.
template <typename Px, typename Py, typename YLabel>
std::string svg_loglog_axes(double L, double T, double pw, double ph, uint64_t xmin, uint64_t xmax,
                            double ly0, double ly1, Px px, Py py, YLabel y_label) {
  std::string o = "<g stroke=\"#dddddd\" stroke-width=\"1\">\n";
  std::vector<uint64_t> ticks;
  for (int p = 0; p < 64; ++p) {
    const uint64_t v = uint64_t{1} << p;
    if (v >= xmin && v <= xmax) ticks.push_back(v);
  }
  size_t step = 1;
  while (ticks.size() / step > 11) ++step;
  std::vector<uint64_t> shown;
  for (size_t k = 0; k < ticks.size(); k += step) shown.push_back(ticks[k]);
  for (uint64_t v : shown)
    o += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\"/>\n",
                     px(static_cast<double>(v)), T, T + ph);
  for (double e = ly0; e <= ly1 + 1e-9; e += 1)
    o += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\"/>\n", L,
                     py(std::pow(10.0, e)), L + pw);
  o += "</g>\n";
  o += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333333\"/>\n", L,
      T, pw, ph);
  o += "<g font-size=\"12\" fill=\"#333333\">\n";
  for (uint64_t v : shown)
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                     px(static_cast<double>(v)), T + ph + 18, format_count(v));
  for (double e = ly0; e <= ly1 + 1e-9; e += 1) {
    const double v = std::pow(10.0, e);
    o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", L - 8,
                     py(v) + 4, y_label(v, e));
  }
  o += "</g>\n";
  return o;
}

}  // namespace dsv4::cli
