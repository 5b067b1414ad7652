#include "store/trial_view.h"

#include <algorithm>

#include "common/check.h"

namespace hylab::store {

using nlohmann::json;

std::string render_trial(Db& db, int64_t trial_id, Format f) {
  ResultsQuery q;
  q.provenance = true;
  const Table all = results(db, q);
  const int id = all.column("trial_id");
  const auto row = std::find_if(all.rows.begin(), all.rows.end(),
                                [&](const auto& r) { return r[id] == json(trial_id); });
  if (row == all.rows.end()) {
    HYLAB_FAIL("--trial {}: no trial with trial_id {} in {} (`hylab results` lists them)", trial_id,
               trial_id, db.path());
  }
  auto st = db.prepare("SELECT config_json FROM trials WHERE trial_id = ?");
  st.bind(1, trial_id);
  HYLAB_CHECK(st.step(), "trial {} vanished", trial_id);
  const json config = json::parse(st.text(0), nullptr, false);
  if (f == Format::kCsv) {
    Table one;
    one.columns = all.columns;
    one.rows = {*row};
    return render(one, f);
  }
  if (f == Format::kJson) {
    json obj = json::object();
    for (size_t c = 0; c < all.columns.size(); ++c) obj[all.columns[c]] = (*row)[c];
    obj["config"] = config;
    return obj.dump(2) + "\n";
  }
  size_t width = 0;
  for (const auto& c : all.columns) width = std::max(width, c.size());
  std::string out;
  for (size_t c = 0; c < all.columns.size(); ++c) {
    const json& v = (*row)[c];
    std::string text = v.is_null() ? "-" : v.is_string() ? v.get<std::string>() : v.dump();
    out += fmt::format("{:<{}}  {}\n", all.columns[c], width, text);
  }
  out += "config\n";
  const std::string pretty = config.is_object() ? config.dump(2) : st.text(0);
  for (size_t i = 0, j; i < pretty.size(); i = j + 1) {
    j = pretty.find('\n', i);
    if (j == std::string::npos) j = pretty.size();
    out += "  " + pretty.substr(i, j - i) + "\n";
  }
  return out;
}

}  // namespace hylab::store
