"""A streamed chat answer as the Responses stream's events, in the order OpenAI sends them.

`ChunkEvents` reads the chat chunks of the first choice and makes: `response.created` and `response.in_progress`
first; for reasoning text a reasoning item with one summary part (`response.reasoning_summary_*`); for text a message
item with one output_text part (`response.output_text.delta` … `.done`); for each tool call a function_call item
(`response.function_call_arguments.delta` … `.done`); each item `response.output_item.added` and `.done`; and
`response.completed` (or `response.incomplete`) with the whole response and its usage last.
"""

from __future__ import annotations

from gateway.engine.responses_chat import finish, item_id, response_usage
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import responses_pb2 as rpb

Event = rpb.StreamResponseResponse


class _Open:
    """An output item being streamed: its index, and the text (or arguments) so far."""

    __slots__ = ("index", "item", "pieces")

    def __init__(self, index: int, item: rpb.ResponseItem) -> None:
        self.index = index
        self.item = item
        self.pieces: list[str] = []


class ChunkEvents:
    """The events of one response made from chat chunks; `response` has its id, model and request set."""

    def __init__(self, response: rpb.Response) -> None:
        self.response = response
        self._seq = 0
        self._reasoning: _Open | None = None
        self._message: _Open | None = None
        self._calls: dict[int, _Open] = {}  # by the chunk's tool call index
        self._open: list[_Open] = []  # in output order
        self._items = 0
        self._finish = pb.FINISH_REASON_UNSPECIFIED
        self._usage: pb.Usage | None = None

    def _event(self, kind: str, **fields: object) -> Event:
        event = Event(type=kind, sequence_number=self._seq, **fields)  # type: ignore[arg-type]
        self._seq += 1
        return event

    def _snapshot(self, kind: str) -> Event:
        event = self._event(kind)
        event.response.CopyFrom(self.response)
        return event

    def opening(self) -> list[Event]:
        """`response.created` and `response.in_progress`."""
        self.response.status = "in_progress"
        return [self._snapshot("response.created"), self._snapshot("response.in_progress")]

    def feed(self, chunk: pb.StreamChatCompletionResponse) -> list[Event]:
        """The events one chunk makes (its first choice's; a usage chunk makes none)."""
        if chunk.HasField("usage"):
            self._usage = chunk.usage
        if chunk.model and not self.response.model:
            self.response.model = chunk.model
        events: list[Event] = []
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.HasField("reasoning_content") and delta.reasoning_content:
                events += self._reasoning_delta(delta.reasoning_content)
            if delta.HasField("content") and delta.content:
                events += self._text_delta(delta.content)
            for call in delta.tool_calls:
                events += self._call_delta(call)
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return events

    def closing(self) -> list[Event]:
        """Every open item done, then `response.completed` (or `response.incomplete`) with the usage."""
        events: list[Event] = []
        for item in self._open:
            events += self._done(item)
        self._open.clear()
        finish(self.response, self._finish)
        if self._usage is not None:
            self.response.usage.CopyFrom(response_usage(self._usage))
        kind = "response.incomplete" if self.response.status == "incomplete" else "response.completed"
        return [*events, self._snapshot(kind)]

    # ------------------------------------------------------------------------------------------------ items

    def _add(self, item: rpb.ResponseItem) -> tuple[_Open, Event]:
        opened = _Open(self._items, item)
        self._items += 1
        self._open.append(opened)
        return opened, self._event("response.output_item.added", output_index=opened.index, item=item)

    def _reasoning_delta(self, text: str) -> list[Event]:
        events = []
        if self._reasoning is None:
            self._reasoning, added = self._add(rpb.ResponseItem(type="reasoning", id=item_id("rs")))
            part = rpb.ResponseContent(type="summary_text")
            events += [added, self._indexed("response.reasoning_summary_part.added", self._reasoning, part=part)]
        self._reasoning.pieces.append(text)
        return [*events, self._indexed("response.reasoning_summary_text.delta", self._reasoning, delta=text)]

    def _end_reasoning(self) -> list[Event]:
        # Reasoning comes first: it is done when the answer begins, as OpenAI's stream has it.
        if self._reasoning is None or self._reasoning not in self._open:
            return []
        self._open.remove(self._reasoning)
        return self._done(self._reasoning)

    def _text_delta(self, text: str) -> list[Event]:
        events = self._end_reasoning()
        if self._message is None:
            item = rpb.ResponseItem(type="message", id=item_id("msg"), status="in_progress", role="assistant")
            self._message, added = self._add(item)
            part = rpb.ResponseContent(type="output_text")
            events += [added, self._indexed("response.content_part.added", self._message, part=part)]
        self._message.pieces.append(text)
        return [*events, self._indexed("response.output_text.delta", self._message, delta=text)]

    def _call_delta(self, call: pb.ToolCallDelta) -> list[Event]:
        events = self._end_reasoning()
        opened = self._calls.get(call.index)
        if opened is None:
            item = rpb.ResponseItem(
                type="function_call", id=item_id("fc"), status="in_progress", call_id=call.id, name=call.function.name
            )
            opened, added = self._add(item)
            self._calls[call.index] = opened
            events.append(added)
        elif call.function.name:
            opened.item.name += call.function.name
        if call.extra_json:  # a provider's own fields ride on the call (Gemini's thought signature)
            opened.item.extra_json = call.extra_json
        if call.function.arguments:
            opened.pieces.append(call.function.arguments)
            events.append(
                self._indexed("response.function_call_arguments.delta", opened, delta=call.function.arguments)
            )
        return events

    def _indexed(self, kind: str, opened: _Open, **fields: object) -> Event:
        """An event about an open item: its id and output index, and the part index its type has."""
        if kind.startswith("response.reasoning_summary"):
            fields["summary_index"] = 0
        elif kind.startswith(("response.content_part", "response.output_text")):
            fields["content_index"] = 0
        return self._event(kind, item_id=opened.item.id, output_index=opened.index, **fields)

    def _done(self, opened: _Open) -> list[Event]:
        item, text = opened.item, "".join(opened.pieces)
        events = []
        if item.type == "reasoning":
            part = rpb.ResponseContent(type="summary_text", text=text)
            item.summary.append(part)
            events += [
                self._indexed("response.reasoning_summary_text.done", opened, text=text),
                self._indexed("response.reasoning_summary_part.done", opened, part=part),
            ]
        elif item.type == "message":
            part = rpb.ResponseContent(type="output_text", text=text)
            item.content.append(part)
            item.status = "incomplete" if self._finish == pb.FINISH_REASON_LENGTH else "completed"
            events += [
                self._indexed("response.output_text.done", opened, text=text),
                self._indexed("response.content_part.done", opened, part=part),
            ]
        else:
            item.arguments, item.status = text, "completed"
            events.append(self._indexed("response.function_call_arguments.done", opened, arguments=text))
        self.response.output.append(item)
        events.append(self._event("response.output_item.done", output_index=opened.index, item=item))
        return events
