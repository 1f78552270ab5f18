package store

// Sections of a table holding entries, in table order.
const (
	sectionOutbound uint8 = iota
	sectionRecipients
	sectionSenders
)

// sectionNames are the sections' names in the table and in messages.
var sectionNames = [...]string{sectionOutbound: "outbound", sectionRecipients: "recipients", sectionSenders: "senders"}
