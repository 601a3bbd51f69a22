// tools/dsv4/svg.h — the pieces every `--plot FILE.svg` of the dsv4 commands shares.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

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

}  // namespace dsv4::cli
