// The parts of a man page that --help also prints, made from one source: the CLI11 application
// that parses the command line (OPTIONS) and the tables below (EXIT STATUS, ENVIRONMENT). Both
// programs print them as troff with the hidden option --help-man; the build pastes that into the
// hand-written prose of packaging/man/*.in, so --help and the man page cannot drift apart.
//
// Header-only: only slipstream-trace's and slipstreamd's option parsers include it (they link
// CLI11; the rest of matcher/ does not).
#ifndef SLIPSTREAM_MATCHER_CLI_MAN_H_
#define SLIPSTREAM_MATCHER_CLI_MAN_H_

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "slipstream_version.h"

namespace slipstream::matcher {

// One row of EXIT STATUS or ENVIRONMENT: what the --help footer and the man page both list.
struct ManEntry {
  const char* term;  // "2", "SLIPSTREAM_LOG=LEVEL"
  const char* text;  // one sentence or a few; no troff
};

// Escapes text for troff: backslashes and hyphens (so that options can be searched and copied),
// and a leading '.' or '\'' that would start a request.
inline std::string RoffEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\e";
    } else if (c == '-') {
      out += "\\-";
    } else {
      out += c;
    }
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out.insert(0, "\\&");
  return out;
}

// "-o, --output FILE" as troff: names bold, the argument italic ("[=FORMAT]": optional value).
inline std::string RoffOptionTerm(const CLI::Option& opt) {
  std::string term;
  for (const auto& s : opt.get_snames())
    term += (term.empty() ? "" : ", ") + ("\\fB\\-" + s + "\\fR");
  for (const auto& l : opt.get_lnames()) {
    term += (term.empty() ? "" : ", ") + ("\\fB" + RoffEscape("--" + l) + "\\fR");
  }
  std::string type = opt.get_type_name();
  if (type.rfind("[=", 0) == 0 && type.back() == ']') {
    term += "[=\\fI" + RoffEscape(type.substr(2, type.size() - 3)) + "\\fR]";
  } else if (opt.get_items_expected_max() > 0 && !type.empty()) {
    term += " \\fI" + RoffEscape(type) + "\\fR";
  }
  return term;
}

// The visible options of `app`, as .TP paragraphs (hidden options, group "", are left out).
inline std::string RoffOptions(const CLI::App& app) {
  std::string out = ".SH OPTIONS\n";
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->get_group().empty() || !opt->nonpositional()) continue;
    std::string text = opt->get_description();
    if (text.empty()) text = opt->get_name();
    out += ".TP\n" + RoffOptionTerm(*opt) + "\n" + RoffEscape(text) + "\n";
  }
  return out;
}

inline std::string RoffEntries(const char* title, const std::vector<ManEntry>& entries,
                               bool bold_term) {
  std::string out = std::string(".SH ") + title + "\n";
  for (const ManEntry& e : entries) {
    std::string term = RoffEscape(e.term);
    out += ".TP\n" + (bold_term ? "\\fB" + term + "\\fR" : term) + "\n" + RoffEscape(e.text) + "\n";
  }
  return out;
}

// `text` filled to lines of at most `width` columns, each starting with `indent`.
inline std::string FillText(std::string_view text, const std::string& indent, size_t width) {
  std::string out, line;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view word = text.substr(pos, end - pos);
    if (!line.empty() && indent.size() + line.size() + 1 + word.size() > width) {
      out += indent + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + std::string(word);
    pos = end + 1;
  }
  if (!line.empty()) out += indent + line + "\n";
  return out;
}

// The --help footer: the same entries as plain text, the term on its own line.
inline std::string HelpEntries(const char* title, const std::vector<ManEntry>& entries) {
  std::string out = std::string(title) + ":\n";
  for (const ManEntry& e : entries) {
    out += std::string("  ") + e.term + "\n" + FillText(e.text, "      ", 80);
  }
  return out;
}

// What both programs' command lines share around their own options: the --help footer, --version
// (version and commit) and the hidden --help-man, made from the program's tables, and the parse
// with its exits. Construct it before adding the program's options.
class CommandLine {
 public:
  CommandLine(CLI::App& app, const std::vector<ManEntry>& exit_status,
              const std::vector<ManEntry>& environment, const char* see_also)
      : app_(app), exit_status_(exit_status), environment_(environment) {
    app.footer(HelpEntries("Exit status", exit_status) + "\n" +
               HelpEntries("Environment", environment) + "\n" + see_also);
    app.set_version_flag("--version", app.get_name() + " " + SLIPSTREAM_VERSION + " (commit " +
                                          SLIPSTREAM_COMMIT + ")");
    app.add_flag("--help-man", help_man_, "print the generated man page sections (build)")
        ->group("");
  }

  // Parses argv: false when the program must exit now with *exit_code: 0 after --help, --version
  // or --help-man (printed), 2 after a usage error (the message printed on stderr).
  bool Parse(int argc, char** argv, int* exit_code) {
    try {
      app_.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      *exit_code = app_.exit(e);
      return false;
    } catch (const CLI::CallForVersion& e) {
      *exit_code = app_.exit(e);
      return false;
    } catch (const CLI::ParseError& e) {
      return UsageError(e.what(), exit_code);
    }
    if (!help_man_) return true;
    std::string roff = RoffOptions(app_) + RoffEntries("EXIT STATUS", exit_status_, false) +
                       RoffEntries("ENVIRONMENT", environment_, true);
    fwrite(roff.data(), 1, roff.size(), stdout);
    *exit_code = 0;
    return false;
  }

  // Prints "NAME: what" and the --help hint on stderr, sets *exit_code to 2; returns false.
  bool UsageError(const std::string& what, int* exit_code) const {
    fprintf(stderr, "%s: %s\nTry '%s --help'.\n", app_.get_name().c_str(), what.c_str(),
            app_.get_name().c_str());
    *exit_code = 2;
    return false;
  }

 private:
  CLI::App& app_;
  const std::vector<ManEntry>& exit_status_;
  const std::vector<ManEntry>& environment_;
  bool help_man_ = false;
};

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_CLI_MAN_H_
