/// State that crosses threads only through a loop hand-off (`execute`) and is
/// then touched on that one loop only: the hand-off is the synchronisation,
/// which the checker cannot see, hence `@unchecked Sendable`.
package final class LoopConfined<Value>: @unchecked Sendable {
    package var value: Value
    package init(_ value: Value) { self.value = value }
}
