var axios = require('axios');

var config = {
  method: 'get',
  url: 'https://sms.tinsight.tech/apiv2/balance/',
  headers: { 
    'Authorization': 'Token xxxxxxxxxxxxxxxxxxxxxxxxx'
  }
};

axios(config)
.then(function (response) {
  console.log(JSON.stringify(response.data));
})
.catch(function (error) {
  console.log(error);
});
