const express = require('express');
const app = express();

app.get('/webhook', (req, res) => {
  if (req.query.message) {
    const sms = JSON.parse(decodeURIComponent(req.query.message));
    console.log(`SMS from ${sms.from}: ${sms.message}`);
  }
  
  if (req.query.status) {
    const dlr = JSON.parse(decodeURIComponent(req.query.status));
    console.log(`SMS ${dlr.id_sms_api} → ${dlr.status}`);
  }
  
  if (req.query.clics) {
    const click = JSON.parse(decodeURIComponent(req.query.clics));
    console.log(`Click: ${click.phone_number} → ${click.link}`);
  }
  
  if (req.query.calls) {
    const call = JSON.parse(decodeURIComponent(req.query.calls));
    console.log(`${call.title}: ${call.phone_number}`);
  }
  
  if (req.query.qualification) {
    const qual = JSON.parse(decodeURIComponent(req.query.qualification));
    console.log(`Qualification: ${qual.qualification}`);
  }
  
  res.status(200).send('OK');
});

app.listen(3000);
