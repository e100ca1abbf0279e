// OpenAI request bodies: the RWKV chat rendering (pieces tokenised on their own, message ends
// marked for the cache) and the field checks (every bad value a 400 naming the field).
#include "openai_request.hpp"

#include <gtest/gtest.h>

#include "rwkv7/serve.hpp"

namespace rwkv7::server {
namespace {

const Tokenizer kBytes = Tokenizer::bytes();

std::string text_of(const std::vector<int32_t>& ids) { return kBytes.decode(ids); }

TEST(ChatRendering, FollowsTheRwkvWorldFormat) {
  const auto chat = render_chat(nlohmann::json::parse(R"([
    {"role": "system", "content": "  Be brief.  "},
    {"role": "user", "content": "Hi!\r\n\r\n\r\nHow are you?"},
    {"role": "assistant", "content": [{"type": "text", "text": "Fine."}]},
    {"role": "user", "content": "Good"}])"),
                                kBytes);
  const std::string want =
      "System: Be brief.\n\nUser: Hi!\nHow are you?\n\nAssistant: Fine.\n\nUser: Good\n\n"
      "Assistant:";
  EXPECT_EQ(text_of(chat.tokens), want);
  ASSERT_EQ(chat.message_ends.size(), 4u);
  EXPECT_EQ(chat.message_ends[0], int64_t(std::string("System: Be brief.\n\n").size()));
  EXPECT_EQ(chat.message_ends[3], int64_t(want.size() - std::string("Assistant:").size()));
}

int status_of(const std::string& body, bool chat = true) {
  try {
    parse_request(body, chat, "m", kBytes, Limits{});
  } catch (const ApiError& e) {
    return e.status;
  }
  return 200;
}

std::string param_of(const std::string& body, bool chat = true) {
  try {
    parse_request(body, chat, "m", kBytes, Limits{});
  } catch (const ApiError& e) {
    return e.param;
  }
  return "";
}

TEST(RequestChecks, EveryBadFieldIsA400NamingIt) {
  const std::string msgs = R"("messages": [{"role": "user", "content": "hi"}])";
  EXPECT_EQ(status_of("{" + msgs + "}"), 200);
  EXPECT_EQ(status_of("{" + msgs), 400);  // malformed JSON
  EXPECT_EQ(status_of("[1, 2]"), 400);
  EXPECT_EQ(param_of(R"({"messages": []})"), "messages");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "robot", "content": "x"}]})"), "messages[0].role");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "user", "content": 5}]})"), "messages[0].content");
  EXPECT_EQ(param_of("{" + msgs + R"(, "model": "other"})"), "model");
  EXPECT_EQ(param_of("{" + msgs + R"(, "temperature": "hot"})"), "temperature");
  EXPECT_EQ(param_of("{" + msgs + R"(, "temperature": 3})"), "temperature");
  EXPECT_EQ(param_of("{" + msgs + R"(, "top_p": -0.1})"), "top_p");
  EXPECT_EQ(param_of("{" + msgs + R"(, "max_tokens": -1})"), "max_tokens");
  EXPECT_EQ(param_of("{" + msgs + R"(, "max_tokens": 1e9})"), "max_tokens");
  EXPECT_EQ(param_of("{" + msgs + R"(, "max_tokens": 99999999999999999999})"), "max_tokens");
  EXPECT_EQ(param_of("{" + msgs + R"(, "stop": ["a", ""]})"), "stop");
  EXPECT_EQ(param_of("{" + msgs + R"(, "stop": [1]})"), "stop");
  EXPECT_EQ(param_of("{" + msgs + R"(, "stop": ")" + std::string(257, 'x') + "\"}"), "stop");
  EXPECT_EQ(param_of("{" + msgs + R"(, "stream": "yes"})"), "stream");
  EXPECT_EQ(param_of("{" + msgs + R"(, "stream_options": {"include_usage": 1}})"), "include_usage");
  EXPECT_EQ(param_of("{" + msgs + R"(, "n": 2})"), "n");
  EXPECT_EQ(param_of(R"({"prompt": [1, 999]})", false), "prompt");
  EXPECT_EQ(param_of(R"({"prompt": ""})", false), "prompt");
  EXPECT_EQ(param_of(R"({"prompt": {"a": 1}})", false), "prompt");
  EXPECT_EQ(status_of("{" + msgs + R"(, "unknown_field": {"x": 1}})"), 200);  // ignored
}

TEST(RequestChecks, FieldsReachTheSchedulerRequest) {
  const auto r = parse_request(R"({"prompt": "abc", "max_tokens": 7, "temperature": 0.5,
      "top_p": 0.9, "top_k": 40, "presence_penalty": 0.25, "frequency_penalty": -0.5,
      "seed": 42, "stop": "xy", "stream": true, "stream_options": {"include_usage": true}})",
                               false, "m", kBytes, Limits{});
  EXPECT_EQ(text_of(r.serve.prompt), "abc");
  EXPECT_EQ(r.serve.options.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.serve.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.serve.sampling.top_p, 0.9f);
  EXPECT_EQ(r.serve.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.serve.sampling.presence_penalty, 0.25f);
  EXPECT_FLOAT_EQ(r.serve.sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(r.serve.sampling.seed, 42u);
  EXPECT_EQ(r.serve.options.stop, std::vector<std::string>{"xy"});
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  Limits small;
  small.max_prompt_tokens = 2;
  EXPECT_THROW(parse_request(R"({"prompt": "abc"})", false, "m", kBytes, small), ApiError);
}

}  // namespace
}  // namespace rwkv7::server

namespace rwkv7::server {
namespace {

TEST(ChatRendering, AReplySentBackAsGeneratedKeepsItsFirstCharacter) {
  const auto chat = render_chat(nlohmann::json::parse(R"([
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "\nI am here.\n"},
    {"role": "assistant", "content": " Spaced."}])"),
                                kBytes);
  EXPECT_EQ(text_of(chat.tokens),
            "User: Hi\n\nAssistant:\nI am here.\n\nAssistant: Spaced.\n\nAssistant:");
}

// The next turn of a conversation (history + the reply as returned + a new message) resumes
// from the state saved at the end of the reply: only the new message is computed.
TEST(ChatRendering, TheNextTurnResumesAfterThePreviousReply) {
  auto model = Model::load(std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth");
  auto tok = std::make_shared<const Tokenizer>(Tokenizer::bytes());
  SchedulerOptions o;
  o.threads = 1;
  Scheduler s(model, tok, o);
  nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", "Speak"}}});
  int64_t computed_before = 0;
  for (int turn = 0; turn < 4; ++turn) {
    const std::string body =
        nlohmann::json{{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}}.dump();
    ParsedRequest r = parse_request(body, true, "m", *tok, Limits{});
    const int64_t prompt = int64_t(r.serve.prompt.size());
    auto t = s.submit(std::move(r.serve));
    ASSERT_TRUE(t.stream);
    std::string reply;
    ServeEvent e;
    while (t.stream->next(e, std::chrono::steady_clock::now() + std::chrono::seconds(30))) {
      if (e.kind == ServeEvent::Kind::Finished) break;
      reply += e.text;
    }
    ASSERT_EQ(e.kind, ServeEvent::Kind::Finished);
    const int64_t computed = s.stats().prompt_tokens_computed - computed_before;
    computed_before = s.stats().prompt_tokens_computed;
    if (turn > 0) {
      // New: "\n\n" after the reply (when it did not end at the stop string) + the user turn
      // + "Assistant:"; everything before was cached.
      EXPECT_EQ(e.usage.cached_tokens + computed, prompt);
      EXPECT_LE(computed, int64_t(std::string("\n\nUser: Go on\n\nAssistant:").size())) << turn;
    }
    messages.push_back({{"role", "assistant"}, {"content", reply}});
    messages.push_back({{"role", "user"}, {"content", "Go on"}});
  }
}

// "state" (an rwkv7 extension) names one of the server's start states; an unknown name or a
// non-string is a 400 naming the field.
TEST(RequestChecks, StateNamesOneOfTheServersStartStates) {
  State zero;
  zero.wkv.assign(4, 0.5f);
  StartStates states{{"doc", StartState::make("doc", zero)}};
  const std::string body = R"({"prompt": "Q:", "state": "doc"})";
  const auto r = parse_request(body, false, "m", kBytes, Limits{}, states);
  ASSERT_TRUE(r.serve.start);
  EXPECT_EQ(r.serve.start->name, "doc");
  EXPECT_FALSE(
      parse_request(R"({"prompt": "Q:"})", false, "m", kBytes, Limits{}, states).serve.start);
  for (const std::string bad :
       {R"({"prompt": "Q:", "state": "other"})", R"({"prompt": "Q:", "state": 3})"}) {
    try {
      parse_request(bad, false, "m", kBytes, Limits{}, states);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400) << bad;
      EXPECT_EQ(e.param, "state") << bad;
    }
  }
  EXPECT_EQ(param_of(body, false), "state");  // a server without states
}

}  // namespace
}  // namespace rwkv7::server
