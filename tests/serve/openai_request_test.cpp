// OpenAI request bodies: the RWKV chat rendering (pieces tokenised on their own, message ends
// marked for the cache) and the field checks (every bad value a 400 naming the field).
#include "openai_request.hpp"

#include <gtest/gtest.h>

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
